package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procSpec is one container process to start through the shim.
type procSpec struct {
	ShimPath string
	Binary   string
	Args     []string
	Env      []string
	Shim     shimSpec
	Cgroup   string // cgroup2 directory the process starts in
	LogPath  string // stdout and stderr are appended here
}

// proc is a running container process. exitCode and finished are valid once
// done is closed.
type proc struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{}

	exitCode int32
	signaled bool
	finished time.Time
}

// errStart is a container that could not be started (the shim failed before
// it exec'd the binary); kubelet reports it as the terminated reason
// StartError.
var errStart = errors.New("start container")

// startProc starts the shim in a new cgroup spec.Cgroup and waits until it has exec'd the
// container binary or failed. The caller must call wait.
func startProc(ctx context.Context, spec procSpec) (*proc, error) {
	// Each instance gets a fresh cgroup: on this kernel a process cloned
	// into a cgroup that was once killed through cgroup.kill is killed at
	// birth, and nothing of a previous instance may linger anyway.
	if err := removeCgroup(ctx, spec.Cgroup); err != nil {
		return nil, err
	}
	if err := ensureCgroup(spec.Cgroup); err != nil {
		return nil, err
	}
	cg, err := unix.Open(spec.Cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", spec.Cgroup, err)
	}
	defer unix.Close(cg)
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	logf, err := os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create status pipe: %w", err)
	}
	defer r.Close()
	s := spec.Shim
	s.StatusFD = 3
	argv, err := shimArgs(spec.ShimPath, s, spec.Binary, spec.Args)
	if err != nil {
		w.Close()
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       spec.ShimPath,
		Args:       argv,
		Env:        spec.Env,
		Stdin:      nil,
		Stdout:     logf,
		Stderr:     logf,
		ExtraFiles: []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:     true,
			UseCgroupFD: true,
			CgroupFD:    cg,
		},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("start shim: %w", err)
	}
	p := &proc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	_ = r.SetReadDeadline(time.Now().Add(30 * time.Second))
	msg, rerr := io.ReadAll(r)
	if len(msg) > 0 || (rerr != nil && !errors.Is(rerr, io.EOF)) {
		// The shim failed: reap it before reporting.
		_ = unix.Kill(-p.pid, unix.SIGKILL)
		p.wait()
		if len(msg) == 0 {
			msg = []byte(rerr.Error())
		}
		return nil, fmt.Errorf("%w: %s", errStart, bytes.TrimSpace(msg))
	}
	return p, nil
}

// wait waits for the process to exit and records how it ended.
func (p *proc) wait() {
	_ = p.cmd.Wait()
	ps := p.cmd.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		p.signaled = true
		p.exitCode = 128 + int32(ws.Signal())
	} else {
		p.exitCode = int32(ps.ExitCode())
	}
	p.finished = time.Now()
	close(p.done)
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process group of the container.
func (p *proc) signal(sig unix.Signal) {
	if !p.exited() {
		_ = unix.Kill(-p.pid, sig)
	}
}

// execInContainer runs argv in the namespaces of the running container
// process pid (an exec probe or hook), in the container's cgroup, and returns
// its combined output. A non-zero exit is an *exec.ExitError.
func execInContainer(ctx context.Context, shimPath string, pid int, env []string, workDir, cgroup string, argv []string, timeout time.Duration) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec in container: no command")
	}
	args, err := shimArgs(shimPath, shimSpec{JoinPID: pid, WorkDir: workDir}, argv[0], argv[1:])
	if err != nil {
		return nil, err
	}
	cg, err := unix.Open(cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", cgroup, err)
	}
	defer unix.Close(cg)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out limitedBuffer
	out.max = 10 << 10
	cmd := exec.CommandContext(ctx, shimPath)
	cmd.Args = args
	cmd.Env = env
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, UseCgroupFD: true, CgroupFD: cg}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		return out.Bytes(), fmt.Errorf("command %q timed out after %v", argv, timeout)
	}
	return out.Bytes(), err
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}
