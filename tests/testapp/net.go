package testapp

import (
	"context"
	"fmt"
	"net"
	"time"
)

// listenTCP listens on addr with Multipath TCP disabled. Go 1.24 and later
// use MPTCP on listeners by default, and weft's socket-level eBPF programs
// see only plain TCP.
func listenTCP(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// newDialer returns a dialer with the given connect timeout and Multipath
// TCP disabled, for the same reason as listenTCP.
func newDialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	d.SetMultipathTCP(false)
	return d
}
