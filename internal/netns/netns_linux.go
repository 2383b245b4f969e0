package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// ID identifies a network namespace independently of the path it was opened
// by (a pod's netns is reachable through many /proc entries).
type ID struct {
	Dev   uint64
	Inode uint64
}

func (id ID) String() string { return fmt.Sprintf("netns:[%d:%d]", id.Dev, id.Inode) }

// Identify returns the ID of an open netns file.
func Identify(ns *os.File) (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil {
		return ID{}, fmt.Errorf("stat netns %s: %w", ns.Name(), err)
	}
	return ID{Dev: st.Dev, Inode: st.Ino}, nil
}

// Do runs f on a fresh OS thread that has joined the network namespace ns.
// Only syscalls f makes on its own goroutine land in ns. If the thread cannot
// be restored to its original namespace it is left locked, so the Go runtime
// discards it instead of reusing a thread in the wrong namespace.
func Do(ns *os.File, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns.Name(), err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the goroutine exits and the thread dies with it.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Cookie returns the kernel's cookie for the network namespace ns, as
// bpf_get_netns_cookie() sees it: read from a socket created inside it.
func Cookie(ns *os.File) (uint64, error) {
	var cookie uint64
	err := Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("create socket: %w", err)
		}
		defer unix.Close(fd)
		v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		if err != nil {
			return fmt.Errorf("read SO_NETNS_COOKIE: %w", err)
		}
		cookie = v
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("netns cookie of %s: %w", ns.Name(), err)
	}
	return cookie, nil
}

// Self opens the calling process's network namespace (the node's, for the
// host-network agent).
func Self() (*os.File, error) {
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open own netns: %w", err)
	}
	return f, nil
}

// ErrHostNetns means a process shares the caller's (the node's) namespace.
var ErrHostNetns = errors.New("process is in the host network namespace")
