package hbonev2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// tunnel is a server and a pool connected to it.
type tunnel struct {
	server *testServer
	dialer *testDialer
	pool   *Pool
}

func newTunnel(tb testing.TB, useTLS bool, sopts ServerOptions, popts PoolOptions, handle func(context.Context, *Stream)) *tunnel {
	tb.Helper()
	scfg := serverConfig{opts: sopts}
	d := &testDialer{}
	if useTLS {
		p := getPKI(tb)
		scfg.tls = p.serverConfig()
		d.tls = p.clientConfig(serverID)
	}
	ts := startServer(tb, scfg, handle)
	d.addr = ts.addr
	return &tunnel{server: ts, dialer: d, pool: newTestPool(tb, d, popts)}
}

func (tn *tunnel) connect(tb testing.TB, hdr http.Header) Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tn.pool.Connect(ctx, testKey, testTarget, hdr)
	if err != nil {
		tb.Fatalf("Connect: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func readAll(tb testing.TB, r io.Reader) []byte {
	tb.Helper()
	return within(tb, 10*time.Second, "read to EOF", func() []byte {
		b, err := io.ReadAll(r)
		if err != nil {
			tb.Errorf("read to EOF: %v", err)
		}
		return b
	})
}

func TestEcho(t *testing.T) {
	tests := []struct {
		name string
		tls  bool
	}{
		{name: "plain", tls: false},
		{name: "tls13", tls: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			var gotTarget atomic.Value
			var gotHeader atomic.Value
			tn := newTunnel(t, tt.tls, ServerOptions{}, PoolOptions{}, func(ctx context.Context, s *Stream) {
				gotTarget.Store(s.Target)
				gotHeader.Store(s.Header.Get("Baggage"))
				echo(ctx, s)
			})
			c := tn.connect(t, http.Header{"Baggage": {"k8s.namespace.name=shop"}})
			msg := []byte("ping over hbone")
			if _, err := c.Write(msg); err != nil {
				t.Fatalf("Write: %v", err)
			}
			got := make([]byte, len(msg))
			within(t, 10*time.Second, "read echo", func() error {
				_, err := io.ReadFull(c, got)
				return err
			})
			if !bytes.Equal(got, msg) {
				t.Errorf("echo = %q, want %q", got, msg)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatalf("CloseWrite: %v", err)
			}
			if rest := readAll(t, c); len(rest) != 0 {
				t.Errorf("after CloseWrite read %q, want EOF", rest)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if got := gotTarget.Load(); got != testTarget {
				t.Errorf("server Target = %v, want %v", got, testTarget)
			}
			if got := gotHeader.Load(); got != "k8s.namespace.name=shop" {
				t.Errorf("server Header baggage = %q, want %q", got, "k8s.namespace.name=shop")
			}
		})
	}
}

// serverSide hands the test the server's end of each accepted stream.
func serverSide(conns chan<- Conn) func(context.Context, *Stream) {
	return func(ctx context.Context, s *Stream) {
		c, err := s.Accept()
		if err != nil {
			return
		}
		conns <- c
	}
}

func recvConn(tb testing.TB, conns <-chan Conn) Conn {
	tb.Helper()
	select {
	case c := <-conns:
		tb.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		tb.Fatal("server accepted no stream")
		return nil
	}
}

func mustWrite(tb testing.TB, w io.Writer, s string) {
	tb.Helper()
	if _, err := w.Write([]byte(s)); err != nil {
		tb.Fatalf("Write(%q): %v", s, err)
	}
}

func mustRead(tb testing.TB, r io.Reader, want string) {
	tb.Helper()
	got := make([]byte, len(want))
	err := within(tb, 10*time.Second, "read "+want, func() error {
		_, err := io.ReadFull(r, got)
		return err
	})
	if err != nil || string(got) != want {
		tb.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func TestHalfCloseClientFirst(t *testing.T) {
	checkLeaks(t)
	conns := make(chan Conn, 1)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, serverSide(conns))
	client := tn.connect(t, nil)
	server := recvConn(t, conns)

	mustWrite(t, client, "request")
	if err := client.CloseWrite(); err != nil {
		t.Fatalf("client CloseWrite: %v", err)
	}
	if got := readAll(t, server); string(got) != "request" {
		t.Errorf("server read %q then EOF, want %q", got, "request")
	}
	if _, err := client.Write([]byte("late")); err == nil {
		t.Error("client Write after CloseWrite succeeded, want an error")
	}
	// The server's direction is still open after the client's ended.
	mustWrite(t, server, "response after client EOF")
	mustRead(t, client, "response after client EOF")
	if err := server.CloseWrite(); err != nil {
		t.Fatalf("server CloseWrite: %v", err)
	}
	if rest := readAll(t, client); len(rest) != 0 {
		t.Errorf("client read %q after server CloseWrite, want EOF", rest)
	}
}

func TestHalfCloseServerFirst(t *testing.T) {
	checkLeaks(t)
	conns := make(chan Conn, 1)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, serverSide(conns))
	client := tn.connect(t, nil)
	server := recvConn(t, conns)

	mustWrite(t, server, "greeting")
	if err := server.CloseWrite(); err != nil {
		t.Fatalf("server CloseWrite: %v", err)
	}
	if _, err := server.Write([]byte("late")); !errors.Is(err, errWriteClosed) {
		t.Errorf("server Write after CloseWrite = %v, want errWriteClosed", err)
	}
	// Bytes written before CloseWrite arrive at once, and the client's
	// direction keeps working.
	mustRead(t, client, "greeting")
	mustWrite(t, client, "more from client")
	mustRead(t, server, "more from client")
	// END_STREAM toward the client is held back until the client's
	// direction ends too; then the client sees EOF without Close.
	if err := client.CloseWrite(); err != nil {
		t.Fatalf("client CloseWrite: %v", err)
	}
	if rest := readAll(t, server); len(rest) != 0 {
		t.Errorf("server read %q, want EOF", rest)
	}
	if rest := readAll(t, client); len(rest) != 0 {
		t.Errorf("client read %q, want EOF", rest)
	}
}

// A server that half-closes and then closes while the client is still
// sending resets the stream, as with a TCP close that leaves data unread.
// Unlike internal/hbone, whose server held END_STREAM back, the client has
// already seen the server's direction end cleanly (io.EOF); the reset shows
// as a failing write.
func TestServerCloseAfterCloseWriteResets(t *testing.T) {
	checkLeaks(t)
	conns := make(chan Conn, 1)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, serverSide(conns))
	client := tn.connect(t, nil)
	server := recvConn(t, conns)

	mustWrite(t, server, "bye")
	server.CloseWrite()
	mustRead(t, client, "bye")
	if rest := readAll(t, client); len(rest) != 0 {
		t.Errorf("client read %q after the server's CloseWrite, want EOF", rest)
	}
	server.Close()
	waitFor(t, "a failing client write after the server's Close", func() bool {
		_, err := client.Write([]byte("more"))
		return err != nil
	})
}

func TestCloseAborts(t *testing.T) {
	tests := []struct {
		name   string
		closer string // "client" or "server"
	}{
		{name: "client closes", closer: "client"},
		{name: "server closes", closer: "server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			conns := make(chan Conn, 1)
			tn := newTunnel(t, true, ServerOptions{}, PoolOptions{}, serverSide(conns))
			client := tn.connect(t, nil)
			server := recvConn(t, conns)
			mustWrite(t, client, "x")
			mustRead(t, server, "x")

			closer, other, otherName := client, server, "server"
			if tt.closer == "server" {
				closer, other, otherName = server, client, "client"
			}
			// The other side is blocked in Read when the stream is aborted.
			readErr := make(chan error, 1)
			go func() {
				_, err := other.Read(make([]byte, 1))
				readErr <- err
			}()
			if err := closer.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case err := <-readErr:
				if err == nil || errors.Is(err, io.EOF) {
					t.Errorf("%s Read after peer Close = %v, want a reset error", otherName, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Read blocked after the peer closed the stream")
			}
			// Writes fail too, at the latest once the reset has arrived.
			waitFor(t, "a failing write on the aborted stream", func() bool {
				_, err := other.Write([]byte("y"))
				return err != nil
			})
			// The closer's own operations fail at once.
			if _, err := closer.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Read after own Close = %v, want net.ErrClosed", err)
			}
			if _, err := closer.Write([]byte("z")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Write after own Close = %v, want net.ErrClosed", err)
			}
		})
	}
}

// Close unblocks this side's own blocked Read and Write.
func TestCloseUnblocksLocal(t *testing.T) {
	tests := []struct {
		name string
		side string
	}{
		{name: "client", side: "client"},
		{name: "server", side: "server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			conns := make(chan Conn, 1)
			// A small window makes a big write block on flow control.
			tn := newTunnel(t, false, ServerOptions{StreamWindow: 64 << 10}, PoolOptions{StreamWindow: 64 << 10}, serverSide(conns))
			client := tn.connect(t, nil)
			server := recvConn(t, conns)
			c := client
			if tt.side == "server" {
				c = server
			}
			readErr := make(chan error, 1)
			writeErr := make(chan error, 1)
			go func() {
				_, err := c.Read(make([]byte, 1))
				readErr <- err
			}()
			go func() {
				// Nobody reads the other end, so this blocks.
				_, err := c.Write(make([]byte, 8<<20))
				writeErr <- err
			}()
			c.Close()
			for what, ch := range map[string]chan error{"Read": readErr, "Write": writeErr} {
				select {
				case err := <-ch:
					if err == nil {
						t.Errorf("%s blocked across Close returned nil, want an error", what)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("%s stayed blocked after Close", what)
				}
			}
		})
	}
}

func TestReject(t *testing.T) {
	tests := []struct {
		name   string
		handle func(context.Context, *Stream)
		want   StatusError
	}{
		{
			name: "policy denial",
			handle: func(_ context.Context, s *Stream) {
				s.Reject(http.StatusForbidden, "denied by TrafficTarget shop/frontend")
			},
			want: StatusError{Code: 403, Reason: "denied by TrafficTarget shop/frontend"},
		},
		{
			name: "unreachable",
			handle: func(_ context.Context, s *Stream) {
				s.Reject(http.StatusServiceUnavailable, "dial 10.1.2.3:8080: connection refused")
			},
			want: StatusError{Code: 503, Reason: "dial 10.1.2.3:8080: connection refused"},
		},
		{
			name:   "control characters are cleaned",
			handle: func(_ context.Context, s *Stream) { s.Reject(http.StatusForbidden, "line one\r\nline two") },
			want:   StatusError{Code: 403, Reason: "line one  line two"},
		},
		{
			name:   "handler that does not answer",
			handle: func(context.Context, *Stream) {},
			want:   StatusError{Code: 500, Reason: "stream handler returned without answering"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			tn := newTunnel(t, true, ServerOptions{}, PoolOptions{}, tt.handle)
			c, err := tn.pool.Connect(context.Background(), testKey, testTarget, nil)
			if err == nil {
				c.Close()
				t.Fatal("Connect succeeded, want a refusal")
			}
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Connect error %v is not a *StatusError", err)
			}
			if *se != tt.want {
				t.Errorf("Connect error = %+v, want %+v", *se, tt.want)
			}
			// A refusal is per stream: the connection stays pooled.
			if _, err := tn.pool.Connect(context.Background(), testKey, testTarget, nil); !errors.As(err, &se) {
				t.Errorf("second Connect = %v, want a *StatusError", err)
			}
			if got := tn.dialer.dials.Load(); got != 1 {
				t.Errorf("dials = %d, want 1", got)
			}
		})
	}
}

func TestAnswerTwice(t *testing.T) {
	checkLeaks(t)
	errs := make(chan [2]error, 1)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, func(ctx context.Context, s *Stream) {
		c, err := s.Accept()
		if err != nil {
			errs <- [2]error{err, nil}
			return
		}
		defer c.Close()
		_, err1 := s.Accept()
		err2 := s.Reject(403, "too late")
		errs <- [2]error{err1, err2}
		io.Copy(io.Discard, c)
	})
	tn.connect(t, nil)
	got := <-errs
	if !errors.Is(got[0], errAnswered) || !errors.Is(got[1], errAnswered) {
		t.Errorf("second Accept, Reject = %v, %v; want errAnswered for both", got[0], got[1])
	}
}

func TestRejectStatusMustRefuse(t *testing.T) {
	checkLeaks(t)
	errs := make(chan error, 1)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, func(_ context.Context, s *Stream) {
		errs <- s.Reject(http.StatusOK, "not a refusal")
		s.Reject(http.StatusForbidden, "refused")
	})
	var se *StatusError
	if _, err := tn.pool.Connect(context.Background(), testKey, testTarget, nil); !errors.As(err, &se) || se.Code != 403 {
		t.Errorf("Connect = %v, want a 403 refusal", err)
	}
	if err := <-errs; err == nil {
		t.Error("Reject(200) = nil, want an error")
	}
}

func TestBadTarget(t *testing.T) {
	tests := []struct {
		name   string
		target netip.AddrPort
	}{
		{name: "zero", target: netip.AddrPort{}},
		{name: "port zero", target: netip.MustParseAddrPort("10.1.2.3:0")},
		{name: "zone", target: netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 80)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &testDialer{addr: netip.MustParseAddrPort("127.0.0.1:1")}
			p := newTestPool(t, d, PoolOptions{})
			_, err := p.Connect(context.Background(), testKey, tt.target, nil)
			if !errors.Is(err, ErrBadAuthority) {
				t.Errorf("Connect(%v) = %v, want ErrBadAuthority", tt.target, err)
			}
			if got := d.dials.Load(); got != 0 {
				t.Errorf("dials = %d, want 0", got)
			}
		})
	}
}

func TestServeConnContextCancel(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	handlerDone := make(chan struct{})
	accepted := make(chan struct{})
	client, server := net.Pipe()
	served := make(chan struct{})
	go func() {
		defer close(served)
		ServeConn(ctx, server, ServerOptions{}, func(ctx context.Context, s *Stream) {
			defer close(handlerDone)
			c, err := s.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			close(accepted)
			<-ctx.Done() // the stream's context ends with ServeConn's
		})
	}()
	p := NewPool(func(context.Context, Key) (net.Conn, error) { return client, nil }, PoolOptions{})
	defer p.Close()
	c, err := p.Connect(context.Background(), testKey, testTarget, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	<-accepted
	cancel()
	err = within(t, 10*time.Second, "client read after ServeConn's context ended", func() error {
		_, err := c.Read(make([]byte, 1))
		return err
	})
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("client Read = %v, want a connection error", err)
	}
	within(t, 10*time.Second, "handler", func() bool { <-handlerDone; return true })
	within(t, 10*time.Second, "ServeConn", func() bool { <-served; return true })
}
