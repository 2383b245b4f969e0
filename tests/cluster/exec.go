package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ContainerPID returns the PID of a running container's main process: the
// first process of its cgroup, which the node emulator creates at
// <node cgroup>/kubepods/pod<uid>/<container>.
func (c *Cluster) ContainerPID(ctx context.Context, namespace, pod, container string) (int, error) {
	dir, err := c.containerCgroup(ctx, namespace, pod, container)
	if err != nil {
		return 0, err
	}
	return oldestProcess(dir)
}

// oldestProcess is the main process of a container cgroup.
func oldestProcess(dir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return 0, fmt.Errorf("find container process: %w", err)
	}
	// The main process is the oldest: exec'd processes and probes join the
	// same cgroup later.
	best, bestStart := 0, uint64(0)
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		start, err := procStartTime(pid)
		if err != nil {
			continue
		}
		if best == 0 || start < bestStart {
			best, bestStart = pid, start
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("container cgroup %s has no running process", dir)
	}
	return best, nil
}

// containerCgroup is the cgroup directory of a pod's container.
func (c *Cluster) containerCgroup(ctx context.Context, namespace, pod, container string) (string, error) {
	p, err := c.Client.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("get pod %s/%s: %w", namespace, pod, err)
	}
	if container == "" && len(p.Spec.Containers) > 0 {
		container = p.Spec.Containers[0].Name
	}
	if p.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled", namespace, pod)
	}
	return filepath.Join(c.cgroup, p.Spec.NodeName, "kubepods", "pod"+string(p.UID), container), nil
}

// procStartTime is field 22 of /proc/PID/stat (after the parenthesised name).
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// Exec runs argv inside a running container, as `kubectl exec` would: in the
// container's network, mount and UTS namespaces and in its cgroup (so cgroup
// eBPF programs see it as the container's), with the container's
// environment. It returns stdout; a non-zero exit is an error carrying stderr.
func (c *Cluster) Exec(ctx context.Context, namespace, pod, container string, argv ...string) ([]byte, error) {
	cgDir, err := c.containerCgroup(ctx, namespace, pod, container)
	if err != nil {
		return nil, err
	}
	pid, err := oldestProcess(cgDir)
	if err != nil {
		return nil, fmt.Errorf("exec in %s/%s: %w", namespace, pod, err)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, fmt.Errorf("read environment of container: %w", err)
	}
	cg, err := os.Open(cgDir)
	if err != nil {
		return nil, fmt.Errorf("open container cgroup: %w", err)
	}
	defer cg.Close()
	args := append([]string{"-t", strconv.Itoa(pid), "-n", "-m", "-u", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if len(kv) > 0 {
			cmd.Env = append(cmd.Env, string(kv))
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return stdout.Bytes(), fmt.Errorf("exec %v in %s/%s: exit %d: %s", argv, namespace, pod, ee.ExitCode(), bytes.TrimSpace(stderr.Bytes()))
		}
		return stdout.Bytes(), fmt.Errorf("exec %v in %s/%s: %w", argv, namespace, pod, err)
	}
	return stdout.Bytes(), nil
}

// ExecNode runs argv in a node's network namespace (as a host-network process
// of that node).
func (c *Cluster) ExecNode(ctx context.Context, node string, argv ...string) ([]byte, error) {
	args := append([]string{"--net=/run/netns/" + c.NodeNetns(node), "--"}, argv...)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("exec %v on %s: %w: %s", argv, node, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}
