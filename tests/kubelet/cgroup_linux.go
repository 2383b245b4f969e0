package kubelet

import (
	"context"
	"errors"
	"fmt"
	"github.com/weftmesh/weft/internal/mountinfo"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cgroup2Mount returns the mount point of the cgroup v2 hierarchy.
func cgroup2Mount() (string, error) { return mountinfo.Cgroup2Root() }

// resolveCgroupRoot turns Config.CgroupRoot into a directory of the cgroup2
// file system: a path already under the cgroup2 mount is used as is, any other
// is taken relative to the hierarchy's root.
func resolveCgroupRoot(root string) (string, error) {
	mnt, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	root = filepath.Clean(root)
	if root == mnt || strings.HasPrefix(root, mnt+"/") {
		return root, nil
	}
	return filepath.Join(mnt, root), nil
}

// podCgroupName is the pod's cgroup directory name; weft's agent finds pods by
// the "pod<uid>" component, as with kubelet's cgroupfs driver.
func podCgroupName(uid string) string { return "pod" + uid }

// killCgroup kills every process in dir and its descendants (cgroup.kill).
// A cgroup that does not exist is already empty.
func killCgroup(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	return nil
}

// cgroupPopulated reports whether dir or a descendant holds a process.
func cgroupPopulated(dir string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read cgroup events %s: %w", dir, err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "populated "); ok {
			return v != "0", nil
		}
	}
	return false, nil
}

// waitCgroupEmpty polls until dir holds no process or ctx ends.
func waitCgroupEmpty(ctx context.Context, dir string) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		populated, err := cgroupPopulated(dir)
		if err != nil || !populated {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for cgroup %s to empty: %w", dir, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// removeCgroup kills everything in dir, waits for it to empty and removes it
// and its descendants, deepest first.
func removeCgroup(ctx context.Context, dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := killCgroup(dir); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := waitCgroupEmpty(ctx, dir); err != nil {
		return err
	}
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk cgroup %s: %w", dir, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
		}
	}
	return nil
}

// ensureCgroup creates dir (and its parents) in the cgroup2 hierarchy.
func ensureCgroup(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	return nil
}
