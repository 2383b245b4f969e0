package hbonev2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/hbone"
)

// These tests run this package against internal/hbone, which is built on
// x/net/http2's Server and Transport: each side of the wire is then a
// standard HTTP/2 stack, so what passes here is wire-compatible.

// startV1Server runs internal/hbone's ServeConn with echo semantics on
// loopback over TLS 1.3.
func startV1Server(tb testing.TB) netip.AddrPort {
	tb.Helper()
	p := getPKI(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				tc := tls.Server(c, p.serverConfig())
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return
				}
				hbone.ServeConn(ctx, tc, hbone.ServerOptions{}, func(_ context.Context, s *hbone.Stream) {
					c, err := s.Accept()
					if err != nil {
						return
					}
					defer c.Close()
					if _, err := io.Copy(c, c); err == nil {
						c.CloseWrite()
					}
				})
			})
		}
	})
	tb.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echoCheck writes n bytes of stream's pattern to c, half-closes, and
// checks that the same bytes come back followed by io.EOF.
func echoCheck(c io.ReadWriter, closeWrite func() error, stream uint32, n int) error {
	wrote := make(chan error, 1)
	go func() {
		err := writePattern(c, stream, n)
		if err == nil {
			err = closeWrite()
		}
		wrote <- err
	}()
	if err := checkPattern(c, stream, n); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if k, err := c.Read(make([]byte, 1)); k != 0 || err != io.EOF {
		return fmt.Errorf("read after the echo = %d, %v; want EOF", k, err)
	}
	return <-wrote
}

func TestInteropClientAgainstXNetServer(t *testing.T) {
	checkLeaks(t)
	addr := startV1Server(t)
	d := &testDialer{addr: addr, tls: getPKI(t).clientConfig(serverID)}
	p := newTestPool(t, d, PoolOptions{})
	const streams, size = 20, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := p.Connect(ctx, testKey, testTarget, nil)
			if err != nil {
				errs <- fmt.Errorf("stream %d: Connect: %w", i, err)
				return
			}
			defer c.Close()
			if err := echoCheck(c, c.CloseWrite, uint32(i), size); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := d.dials.Load(); got != 1 {
		t.Errorf("dials = %d, want 1", got)
	}
}

func TestInteropXNetClientAgainstServer(t *testing.T) {
	checkLeaks(t)
	p := getPKI(t)
	ts := startServer(t, serverConfig{tls: p.serverConfig()}, echo)
	d := &testDialer{addr: ts.addr, tls: p.clientConfig(serverID)}
	pool := hbone.NewPool(func(ctx context.Context, _ hbone.Key) (net.Conn, error) {
		return d.dial(ctx, Key{})
	}, hbone.PoolOptions{})
	t.Cleanup(func() { pool.Close() })
	key := hbone.Key{SourcePod: testKey.SourcePod, SourceIdentity: clientID, DestIdentity: serverID, Dest: testKey.Dest}
	const streams, size = 20, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := pool.Connect(ctx, key, testTarget, nil)
			if err != nil {
				errs <- fmt.Errorf("stream %d: Connect: %w", i, err)
				return
			}
			defer c.Close()
			if err := echoCheck(c, c.CloseWrite, uint32(i), size); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A refusal from this server reaches the x/net client as one.
	ts2 := startServer(t, serverConfig{tls: p.serverConfig()}, func(_ context.Context, s *Stream) { s.Reject(403, "denied") })
	d2 := &testDialer{addr: ts2.addr, tls: p.clientConfig(serverID)}
	pool2 := hbone.NewPool(func(ctx context.Context, _ hbone.Key) (net.Conn, error) { return d2.dial(ctx, Key{}) }, hbone.PoolOptions{})
	t.Cleanup(func() { pool2.Close() })
	_, err := pool2.Connect(context.Background(), key, testTarget, nil)
	var se *hbone.StatusError
	if !errors.As(err, &se) || se.Code != 403 || se.Reason != "denied" {
		t.Errorf("Connect to a refusing server = %v, want 403 denied", err)
	}
}

// x/net/http2's client copes with this package's early END_STREAM: it
// reads io.EOF after the server's CloseWrite and keeps sending.
func TestInteropXNetClientServerHalfCloseFirst(t *testing.T) {
	checkLeaks(t)
	conns := make(chan Conn, 1)
	p := getPKI(t)
	ts := startServer(t, serverConfig{tls: p.serverConfig()}, serverSide(conns))
	d := &testDialer{addr: ts.addr, tls: p.clientConfig(serverID)}
	pool := hbone.NewPool(func(ctx context.Context, _ hbone.Key) (net.Conn, error) { return d.dial(ctx, Key{}) }, hbone.PoolOptions{})
	t.Cleanup(func() { pool.Close() })
	client, err := pool.Connect(context.Background(), hbone.Key{Dest: testKey.Dest}, testTarget, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer client.Close()
	server := recvConn(t, conns)
	mustWrite(t, server, "banner")
	if err := server.CloseWrite(); err != nil {
		t.Fatalf("server CloseWrite: %v", err)
	}
	mustRead(t, client, "banner")
	if rest := readAll(t, client); len(rest) != 0 {
		t.Errorf("x/net client read %q after the server's CloseWrite, want EOF", rest)
	}
	for _, msg := range []string{"still ", "sending"} {
		mustWrite(t, client, msg)
		mustRead(t, server, msg)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatalf("client CloseWrite: %v", err)
	}
	if rest := readAll(t, server); len(rest) != 0 {
		t.Errorf("server read %q, want EOF", rest)
	}
}
