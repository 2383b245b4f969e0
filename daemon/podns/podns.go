// Package podns finds the network namespace of a pod on this node the way a
// CNI-agnostic node agent must: from /proc, by the pod UID that every
// container runtime (and weft's node emulator) puts in the container's cgroup
// path. It also reports which TCP ports a pod listens on, so the agent can
// refuse to enroll pods that would collide with the node proxy's ports.
package podns

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// podUIDInCgroup matches "pod<uid>" in a cgroup path: cgroupfs drivers write
// the UID with dashes, the systemd driver with underscores
// (kubepods-besteffort-pod1234_5678….slice).
var podUIDInCgroup = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)

// Process is a process that belongs to a pod.
type Process struct {
	PID       int
	StartTime uint64 // clock ticks after boot (/proc/PID/stat field 22)
}

// Scan reads every process under procRoot once and returns, per pod UID, its
// oldest process: the one most likely to be the pod's first container (its
// netns is the pod's; later exec'd processes share it anyway).
func Scan(procRoot string) (map[string]Process, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", procRoot, err)
	}
	out := map[string]Process{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		uid, ok := podUID(filepath.Join(procRoot, e.Name(), "cgroup"))
		if !ok {
			continue
		}
		start, err := startTime(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue // exited while we looked
		}
		if cur, ok := out[uid]; !ok || start < cur.StartTime || (start == cur.StartTime && pid < cur.PID) {
			out[uid] = Process{PID: pid, StartTime: start}
		}
	}
	return out, nil
}

func podUID(cgroupFile string) (string, bool) {
	data, err := os.ReadFile(cgroupFile)
	if err != nil {
		return "", false
	}
	m := podUIDInCgroup.FindSubmatch(data)
	if m == nil {
		return "", false
	}
	return strings.ReplaceAll(string(m[1]), "_", "-"), true
}

// startTime parses field 22 of /proc/PID/stat; the command name (field 2)
// may contain spaces and parentheses, so parse after its closing ')'.
func startTime(statFile string) (uint64, error) {
	data, err := os.ReadFile(statFile)
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse %s: no command name", statFile)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse %s: %d fields", statFile, len(fields))
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// ErrNotFound means no process of the pod runs on this node (yet).
var ErrNotFound = errors.New("no process of the pod found")

// OpenNetns opens the network namespace of a pod's process.
func OpenNetns(procRoot string, p Process) (*os.File, error) {
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(p.PID), "ns", "net"))
	if err != nil {
		return nil, fmt.Errorf("open netns of pid %d: %w", p.PID, err)
	}
	return f, nil
}

// ListeningTCPPorts returns the TCP ports in LISTEN state in the network
// namespace of pid (from /proc/PID/net/tcp{,6}, which show that process's
// namespace).
func ListeningTCPPorts(procRoot string, pid int) (map[uint16]bool, error) {
	ports := map[uint16]bool{}
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "net", name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && name == "tcp6" {
				continue // IPv6 disabled
			}
			return nil, fmt.Errorf("read listening ports of pid %d: %w", pid, err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st …
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" { // TCP_LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				ports[uint16(p)] = true
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read listening ports of pid %d: %w", pid, err)
		}
	}
	return ports, nil
}
