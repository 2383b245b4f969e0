package kubelet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cgroup2Mount returns the mount point of the cgroup v2 hierarchy, read from
// /proc/self/mountinfo (it is /sys/fs/cgroup on unified hosts and often
// /sys/fs/cgroup/unified on hybrid ones).
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("open mountinfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fstype, _, _ := strings.Cut(post, " "); fstype != "cgroup2" {
			continue
		}
		fields := strings.Fields(pre)
		if len(fields) >= 5 {
			return unescapeMountinfo(fields[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", errors.New("find cgroup2 mount: none in /proc/self/mountinfo")
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

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
