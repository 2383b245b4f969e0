package redirect

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns returns a NetnsRunner for the network namespace open at fd (the
// caller keeps ownership of fd). Each call runs fn on a new goroutine locked
// to its OS thread after setns(2); the thread is never unlocked, so it dies
// with the goroutine and never serves other goroutines in the pod netns.
func InNetns(fd int) NetnsRunner {
	return func(fn func() error) error {
		errc := make(chan error, 1)
		go func() {
			// Never unlocked: the thread is discarded when this
			// goroutine exits (runtime.LockOSThread docs).
			runtime.LockOSThread()
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("setns netns fd %d: %w", fd, err)
				return
			}
			errc <- fn()
		}()
		return <-errc
	}
}

// InNetnsPath is InNetns for a namespace file such as /var/run/netns/<name>
// or /proc/<pid>/ns/net, opened for the duration of each call.
func InNetnsPath(path string) NetnsRunner {
	return func(fn func() error) error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", path, err)
		}
		defer f.Close()
		return InNetns(int(f.Fd()))(fn)
	}
}

// NetnsCookie returns the cookie of the network namespace run enters: the
// key of the mesh_netns and ingress_cfg maps (bpf_get_netns_cookie).
func NetnsCookie(run NetnsRunner) (uint64, error) {
	var cookie uint64
	err := run(func() error {
		var err error
		cookie, err = threadNetnsCookie()
		return err
	})
	return cookie, err
}

// threadNetnsCookie returns the netns cookie of the calling thread's network
// namespace, from SO_NETNS_COOKIE on a socket created on this thread. The
// caller must be locked to its OS thread for the answer to mean anything.
func threadNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("create socket for netns cookie: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie)
	if err != nil {
		return 0, fmt.Errorf("get SO_NETNS_COOKIE: %w", err)
	}
	return cookie, nil
}

// soNetnsCookie is SO_NETNS_COOKIE (linux/asm-generic/socket.h), missing from
// x/sys/unix on some architectures.
const soNetnsCookie = 0x47
