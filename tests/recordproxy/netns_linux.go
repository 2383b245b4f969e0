package recordproxy

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// inNetns runs fn on a new goroutine whose OS thread has entered the network
// namespace open at netns, and waits for it. The goroutine stays locked to
// its thread and exits, so the runtime discards the thread: no other
// goroutine ever runs in the pod netns. Only syscalls made by fn itself, on
// that thread, land in the pod netns: create sockets there.
func inNetns(netns *os.File, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked (runtime.LockOSThread: a goroutine that exits
		// locked takes its thread with it).
		runtime.LockOSThread()
		rc, err := netns.SyscallConn()
		if err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		var serr error
		// Control holds a reference on the descriptor, so a concurrent
		// Close cannot hand its number to another file meanwhile.
		if err := rc.Control(func(fd uintptr) { serr = unix.Setns(int(fd), unix.CLONE_NEWNET) }); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		if serr != nil {
			errc <- fmt.Errorf("enter netns: setns: %w", serr)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// netnsCookie returns the cookie (SO_NETNS_COOKIE) of the network namespace
// open at netns, the key of the eBPF maps.
func netnsCookie(netns *os.File) (uint64, error) {
	var cookie uint64
	err := inNetns(netns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("create socket: %w", err)
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		if err != nil {
			return fmt.Errorf("get SO_NETNS_COOKIE: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read netns cookie: %w", err)
	}
	return cookie, nil
}

// markControl returns a net.ListenConfig / net.Dialer Control function that
// sets SO_MARK to mark on the new socket and fails unless the socket is in
// the network namespace with cookie netns, which catches a socket created on
// a thread outside the pod netns.
func markControl(mark uint32, netns uint64) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			if err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
				err = fmt.Errorf("set SO_MARK %#x on %s socket for %s: %w", mark, network, address, err)
				return
			}
			var got uint64
			got, err = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
			switch {
			case err != nil:
				err = fmt.Errorf("get SO_NETNS_COOKIE of %s socket for %s: %w", network, address, err)
			case got != netns:
				err = fmt.Errorf("%s socket for %s created in netns %d, want pod netns %d", network, address, got, netns)
			}
		})
		if cerr != nil {
			return cerr
		}
		return err
	}
}

// socketMark returns the SO_MARK of the socket behind c.
func socketMark(c syscall.Conn) (uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		mark int
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	}); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, fmt.Errorf("get SO_MARK: %w", gerr)
	}
	return uint32(mark), nil
}

// fileID identifies a namespace file: the (device, inode) of its nsfs inode.
type fileID struct{ dev, ino uint64 }

func netnsID(f *os.File) (fileID, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileID{}, fmt.Errorf("stat netns: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("stat netns: no stat_t")
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}
