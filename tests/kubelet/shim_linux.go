package kubelet

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/weftmesh/weft/internal/mountinfo"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// shimSpec tells the shim how to set up a container's namespaces before it
// execs the container's binary. It travels as JSON in the --spec flag.
type shimSpec struct {
	// Netns is the pod's network namespace to join; empty for hostNetwork.
	Netns string `json:"netns,omitempty"`
	// Hostname, when set, gives the container a UTS namespace of its own
	// with that hostname.
	Hostname string `json:"hostname,omitempty"`
	// Mounts are bind-mounted in order, in a private mount namespace.
	Mounts []shimMount `json:"mounts,omitempty"`
	// ReceiveHostMounts makes the container's mounts slaves of the host's
	// (rslave) instead of private, for volumes with mountPropagation
	// HostToContainer or Bidirectional. (Mounts the container makes never
	// propagate back.)
	ReceiveHostMounts bool `json:"receiveHostMounts,omitempty"`
	// WorkDir is created if missing and becomes the working directory.
	WorkDir string `json:"workDir,omitempty"`
	// JoinPID, for exec probes, joins the net, uts and mnt namespaces of a
	// running container process instead of creating any.
	JoinPID int `json:"joinPID,omitempty"`
	// StatusFD, when set, is a pipe to the emulator: the shim writes its
	// error there, or nothing when the exec succeeds (the pipe is
	// close-on-exec), so the emulator tells a start error from an exit.
	StatusFD int `json:"statusFD,omitempty"`
}

// shimMount is one bind mount.
type shimMount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// shimArgs is the argv that makes the shim run binary with args under spec.
func shimArgs(shimPath string, spec shimSpec, binary string, args []string) ([]string, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode shim spec: %w", err)
	}
	return append([]string{shimPath, "shim", "--spec", string(js), "--", binary}, args...), nil
}

// Shim is the container starter. The emulator runs `ShimPath shim --spec JSON
// -- BINARY ARGS...`; Shim joins or creates the container's namespaces,
// performs its bind mounts and execs BINARY with ARGS and the environment it
// was given. It returns only on error, and the caller should then exit
// non-zero.
func Shim(args []string) error {
	fset := flag.NewFlagSet("shim", flag.ContinueOnError)
	specJSON := fset.String("spec", "{}", "container spec (JSON)")
	if err := fset.Parse(args); err != nil {
		return fmt.Errorf("parse shim flags: %w", err)
	}
	var spec shimSpec
	if err := json.Unmarshal([]byte(*specJSON), &spec); err != nil {
		return fmt.Errorf("decode shim spec: %w", err)
	}
	argv := fset.Args()
	err := shim(&spec, argv)
	if spec.StatusFD > 0 {
		f := os.NewFile(uintptr(spec.StatusFD), "status")
		fmt.Fprint(f, err)
		f.Close()
	}
	return err
}

func shim(spec *shimSpec, argv []string) error {
	if len(argv) == 0 {
		return errors.New("run shim: no command")
	}
	// Namespaces are per thread until exec: stay on this one.
	runtime.LockOSThread()
	if spec.StatusFD > 0 {
		unix.CloseOnExec(spec.StatusFD)
	}
	if spec.JoinPID > 0 {
		if err := joinNamespaces(spec.JoinPID); err != nil {
			return err
		}
	} else if err := setUpNamespaces(spec); err != nil {
		return err
	}
	wd := spec.WorkDir
	if wd == "" {
		wd = "/"
	}
	if spec.JoinPID == 0 {
		if err := os.MkdirAll(wd, 0o755); err != nil {
			return fmt.Errorf("create working dir %s: %w", wd, err)
		}
	}
	if err := unix.Chdir(wd); err != nil {
		return fmt.Errorf("chdir %s: %w", wd, err)
	}
	bin := argv[0]
	if !strings.Contains(bin, "/") {
		p, err := exec.LookPath(bin)
		if err != nil {
			return fmt.Errorf("look up %s: %w", bin, err)
		}
		bin = p
	}
	if err := unix.Exec(bin, argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	return nil
}

// joinNamespaces enters the network, UTS and mount namespaces of pid.
func joinNamespaces(pid int) error {
	// setns(CLONE_NEWNS) needs a private fs_struct; Go threads share one.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs: %w", err)
	}
	for _, ns := range []struct {
		name string
		flag int
	}{{"net", unix.CLONE_NEWNET}, {"uts", unix.CLONE_NEWUTS}, {"mnt", unix.CLONE_NEWNS}} {
		p := "/proc/" + strconv.Itoa(pid) + "/ns/" + ns.name
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", p, err)
		}
		err = unix.Setns(fd, ns.flag)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("join %s: %w", p, err)
		}
	}
	return nil
}

// setUpNamespaces joins the pod's network namespace, creates the
// container's mount (and UTS) namespace and performs its mounts.
func setUpNamespaces(spec *shimSpec) error {
	if spec.Netns != "" {
		fd, err := unix.Open(spec.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", spec.Netns, err)
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("join netns %s: %w", spec.Netns, err)
		}
	}
	flags := unix.CLONE_NEWNS
	if spec.Hostname != "" {
		flags |= unix.CLONE_NEWUTS
	}
	if err := unix.Unshare(flags); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	propagation := uintptr(unix.MS_PRIVATE)
	if spec.ReceiveHostMounts {
		propagation = unix.MS_SLAVE
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|propagation, ""); err != nil {
		return fmt.Errorf("set propagation of /: %w", err)
	}
	if spec.Netns != "" {
		// Copies of other pods' netns mounts would keep those namespaces
		// alive after their pods are gone.
		if err := detachNetnsMounts(); err != nil {
			return err
		}
	}
	for _, m := range spec.Mounts {
		if err := bindMount(m); err != nil {
			return err
		}
	}
	return nil
}

// detachNetnsMounts lazily unmounts every named netns in this mount
// namespace.
func detachNetnsMounts() error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("open mountinfo: %w", err)
	}
	defer f.Close()
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := mountinfo.Unescape(fields[4])
		for _, dir := range []string{netnsDir, "/var/run/netns"} {
			if strings.HasPrefix(mp, dir+"/") {
				targets = append(targets, mp)
			}
		}
	}
	for _, t := range targets {
		if err := unix.Unmount(t, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", t, err)
		}
	}
	return nil
}

// bindMount bind-mounts m.Source over m.Target, creating the mount point
// (a directory or an empty file, like the source) when it is missing.
func bindMount(m shimMount) error {
	fi, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("stat mount source %s: %w", m.Source, err)
	}
	if _, err := os.Stat(m.Target); errors.Is(err, fs.ErrNotExist) {
		if fi.IsDir() {
			err = os.MkdirAll(m.Target, 0o755)
		} else if err = os.MkdirAll(filepath.Dir(m.Target), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(m.Target, os.O_CREATE|os.O_RDONLY, 0o644); err == nil {
				f.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("create mount point %s: %w", m.Target, err)
		}
	}
	if err := unix.Mount(m.Source, m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s to %s: %w", m.Source, m.Target, err)
	}
	if m.ReadOnly {
		if err := unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", m.Target, err)
		}
	}
	return nil
}
