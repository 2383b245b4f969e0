package inpod

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// markControl returns a Control function for net.ListenConfig and
// net.Dialer that sets SO_MARK on the new socket and fails unless the socket
// is in the network namespace with cookie netns: a socket created on a thread
// outside the pod netns would leave with the node's address, which must
// never happen silently.
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
				err = fmt.Errorf("read SO_NETNS_COOKIE of %s socket for %s: %w", network, address, err)
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
