package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/weftmesh/weft/internal/mountinfo"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Names of host resources. Everything a cluster creates is named
// weft-<runID>-…, so leftovers can be matched to their (dead) owner.
const (
	resourcePrefix = "weft-"
	cgroupParent   = "weft" // <cgroup2>/weft/<runID>/…
	bpffsRoot      = "/sys/fs/bpf"
)

func netnsName(rid, what string) string { return resourcePrefix + rid + "-" + what }
func hostVethName(rid string) string    { return "wft" + rid }
func pinRoot(rid, node string) string   { return filepath.Join(bpffsRoot, resourcePrefix+rid+"-"+node) }

// sh runs a host command and returns its combined output in the error.
func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// output runs a host command and returns its standard output.
func output(name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

func ip(args ...string) error { return sh("ip", args...) }

// inNetns runs a command inside a named netns (short-lived helpers only).
func inNetns(ns string, args ...string) error {
	return sh("ip", append([]string{"netns", "exec", ns}, args...)...)
}

func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// cgroup2Root finds the cgroup v2 mount (never hard-coded).
func cgroup2Root() (string, error) { return mountinfo.Cgroup2Root() }

// ensureBPFFS mounts bpffs at /sys/fs/bpf when nothing is mounted there, as
// systemd does on most hosts: every node gets a pin root under it.
func ensureBPFFS() error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(bpffsRoot, &st); err == nil && st.Type == 0xcafe4a11 { // BPF_FS_MAGIC
		return nil
	}
	if err := syscall.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", bpffsRoot, err)
	}
	return nil
}

// killCgroup kills every process in the cgroup subtree dir, waits for it to
// empty and removes the directories, deepest first.
func killCgroup(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil || bytes.Contains(data, []byte("populated 0")) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: processes still present after 10s", dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var dirs []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// teardown removes every host resource named after run ID rid: its processes
// (by killing its cgroup subtree, which holds every process it started), its
// network namespaces (which takes their veths, routes and iptables rules
// along), its host veth and its bpffs pin roots.
func teardown(rid string) error {
	var errs []error
	if cg, err := cgroup2Root(); err == nil {
		if err := killCgroup(filepath.Join(cg, cgroupParent, rid)); err != nil {
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, err)
	}
	prefix := resourcePrefix + rid + "-"
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				if err := ip("netns", "delete", e.Name()); err != nil && netnsExists(e.Name()) {
					errs = append(errs, err)
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", hostVethName(rid))); err == nil {
		if err := ip("link", "delete", hostVethName(rid)); err != nil {
			errs = append(errs, err)
		}
	}
	if entries, err := os.ReadDir(bpffsRoot); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				if err := os.RemoveAll(filepath.Join(bpffsRoot, e.Name())); err != nil {
					errs = append(errs, fmt.Errorf("remove pin root: %w", err))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down run %s: %w", rid, err)
	}
	return nil
}
