package capture

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// packetSocket is this process's duplicate (pidfd_getfd) of dumpcap's
// AF_PACKET capture socket. It shares the kernel socket, so it sees the
// filter dumpcap installed and the kernel's delivery counters; it never
// reads packets. It is not safe for concurrent use.
type packetSocket struct{ fd int }

// findPacketSocket duplicates the AF_PACKET socket of process pid, or
// returns errNoSocket while the process has none yet.
func findPacketSocket(pid int) (*packetSocket, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("open pidfd of %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list descriptors of %d: %w", pid, err)
	}
	for _, e := range entries {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		target, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, target, 0)
		if err != nil {
			return nil, fmt.Errorf("duplicate socket %d of %d: %w", target, pid, err)
		}
		domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err == nil && domain == unix.AF_PACKET {
			return &packetSocket{fd: fd}, nil
		}
		unix.Close(fd)
	}
	return nil, errNoSocket
}

// filterInstalled reports whether the socket has a classic BPF filter other
// than libpcap's transient reject-all filter (one "ret #0"), which it
// installs while it swaps in the real one. dumpcap always installs a
// filter: an accept-all one ("ret #snaplen") when it was given none.
func (s *packetSocket) filterInstalled() (bool, error) {
	// SO_GET_FILTER with a zero length returns the number of instructions.
	n, err := s.getFilter(nil)
	if err != nil || n == 0 {
		return false, err
	}
	prog := make([]unix.SockFilter, n)
	if _, err := s.getFilter(prog); err != nil {
		// The filter changed between the two calls (EINVAL): not settled.
		return false, nil
	}
	rejectAll := len(prog) == 1 && prog[0].Code == unix.BPF_RET|unix.BPF_K && prog[0].K == 0
	return !rejectAll, nil
}

func (s *packetSocket) getFilter(prog []unix.SockFilter) (int, error) {
	var ptr unsafe.Pointer
	if len(prog) > 0 {
		ptr = unsafe.Pointer(&prog[0])
	}
	// The length is counted in instructions, not bytes.
	n := uint32(len(prog))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_SOCKET, unix.SO_GET_FILTER,
		uintptr(ptr), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("read capture filter: %w", errno)
	}
	return int(n), nil
}

// stats returns the packets the kernel put into the capture ring and the
// packets it dropped (ring full) since the previous call: the kernel resets
// its counters on every read.
func (s *packetSocket) stats() (received, dropped uint64, err error) {
	st, err := unix.GetsockoptTpacketStatsV3(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0, 0, fmt.Errorf("read capture statistics: %w", err)
	}
	// The kernel reports drops inside the packet count.
	return uint64(st.Packets - min(st.Drops, st.Packets)), uint64(st.Drops), nil
}

func (s *packetSocket) close() error { return unix.Close(s.fd) }

var errNoSocket = errors.New("no capture socket yet")
