package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// process is a long-running cluster component (etcd, an API server, a node
// emulator, kube-proxy) started in a network namespace and a cgroup of the run.
// It is safe for concurrent use.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex // guards the field below
	err error      // exit status, once done is closed
}

// startProcess runs argv inside the named netns (nsenter joins only the
// network namespace, so mounts the process makes, such as `ip netns add`
// bind mounts, stay visible to the host) and inside cgroupDir, which it
// creates. Output goes to logPath.
func startProcess(log *slog.Logger, name, netns, cgroupDir, logPath string, env []string, argv ...string) (*process, error) {
	if err := os.MkdirAll(cgroupDir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup for %s: %w", name, err)
	}
	cg, err := os.Open(cgroupDir)
	if err != nil {
		return nil, fmt.Errorf("open cgroup for %s: %w", name, err)
	}
	defer cg.Close()
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir for %s: %w", name, err)
	}
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log for %s: %w", name, err)
	}
	defer out.Close()

	full := argv
	if netns != "" {
		full = append([]string{"nsenter", "--net=/run/netns/" + netns, "--"}, argv...)
	}
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:     true,
		UseCgroupFD: true,
		CgroupFD:    int(cg.Fd()),
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { // owned by p: ends when the process exits
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
		log.Debug("process exited", "name", name, "err", err)
	}()
	log.Debug("process started", "name", name, "pid", cmd.Process.Pid, "netns", netns)
	return p, nil
}

// exited returns the exit error if the process has ended, nil otherwise.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group and waits up to grace, then kills it.
func (p *process) stop(ctx context.Context, grace time.Duration) {
	if ok, _ := p.exited(); ok {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	case <-ctx.Done():
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}
