package hbonev2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// streamHeader carries the test's stream number so the server knows which
// pattern to expect and send.
const streamHeader = "X-Test-Stream"

// patternServer reads the client's pattern for the stream and sends its own
// back, both n bytes, at the same time. done counts the handlers that
// returned: the server's END_STREAM goes out before it has read the
// client's, so a client can finish before its server handler has.
func patternServer(tb testing.TB, n int, done *atomic.Int64) func(context.Context, *Stream) {
	return func(_ context.Context, s *Stream) {
		defer done.Add(1)
		id, err := strconv.ParseUint(s.Header.Get(streamHeader), 10, 32)
		if err != nil {
			s.Reject(400, "no stream number")
			return
		}
		c, err := s.Accept()
		if err != nil {
			tb.Errorf("stream %d: Accept: %v", id, err)
			return
		}
		defer c.Close()
		wrote := make(chan error, 1)
		go func() {
			err := writePattern(c, replyStream(uint32(id)), n)
			if err == nil {
				err = c.CloseWrite()
			}
			wrote <- err
		}()
		if err := checkPattern(c, uint32(id), n); err != nil {
			tb.Errorf("stream %d: server received: %v", id, err)
		} else if k, err := c.Read(make([]byte, 1)); k != 0 || err != io.EOF {
			tb.Errorf("stream %d: server read after the data = %d, %v; want EOF", id, k, err)
		}
		if err := <-wrote; err != nil {
			tb.Errorf("stream %d: server send: %v", id, err)
		}
	}
}

// replyStream names the pattern of a stream's server-to-client direction.
func replyStream(id uint32) uint32 { return id + 1<<20 }

// patternClient runs stream id against patternServer.
func patternClient(ctx context.Context, p *Pool, id uint32, n int) error {
	c, err := p.Connect(ctx, testKey, testTarget, http.Header{streamHeader: {strconv.Itoa(int(id))}})
	if err != nil {
		return err
	}
	defer c.Close()
	wrote := make(chan error, 1)
	go func() {
		err := writePattern(c, id, n)
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- err
	}()
	if err := checkPattern(c, replyStream(id), n); err != nil {
		return fmt.Errorf("client received: %w", err)
	}
	if k, err := c.Read(make([]byte, 1)); k != 0 || err != io.EOF {
		return fmt.Errorf("client read after the data = %d, %v; want EOF", k, err)
	}
	if err := <-wrote; err != nil {
		return fmt.Errorf("client send: %w", err)
	}
	return nil
}

// TestManyStreams runs 1,000 concurrent streams through one pool to one
// server over TLS 1.3 with client certificates, 1 MiB each way per stream,
// and checks every byte and the number of connections.
func TestManyStreams(t *testing.T) {
	checkLeaks(t)
	streams, size := 1000, 1<<20
	if testing.Short() {
		size = 64 << 10
	}
	const perConn = 100
	var handled atomic.Int64
	tn := newTunnel(t, true, ServerOptions{}, PoolOptions{MaxStreamsPerConn: perConn}, patternServer(t, size, &handled))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			if err := patternClient(ctx, tn.pool, uint32(i), size); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	waitFor(t, "every server handler to finish", func() bool { return handled.Load() == int64(streams) })
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 10 {
			t.Error(err)
		}
	}
	if failed > 10 {
		t.Errorf("... %d streams failed in all", failed)
	}
	elapsed := time.Since(start)
	dials, accepted := tn.dialer.dials.Load(), tn.server.accepted.Load()
	t.Logf("%d streams × %d KiB each way in %v (%.0f MiB/s), %d connections", streams, size>>10, elapsed.Round(time.Millisecond), float64(2*streams*size)/(1<<20)/elapsed.Seconds(), dials)
	if want := int64(streams / perConn); dials > want || accepted != dials {
		t.Errorf("pool dialled %d connections (server accepted %d), want at most %d", dials, accepted, want)
	}
}

func TestConnectSharesDial(t *testing.T) {
	checkLeaks(t)
	tn := newTunnel(t, true, ServerOptions{}, PoolOptions{}, echo)
	release := make(chan struct{})
	var dials atomic.Int64
	p := newTestPool(t, tn.dialer, PoolOptions{})
	p.dial = func(ctx context.Context, key Key) (net.Conn, error) {
		dials.Add(1)
		<-release
		return tn.dialer.dial(ctx, key)
	}
	const n = 50
	var wg sync.WaitGroup
	conns := make(chan Conn, n)
	for range n {
		wg.Go(func() {
			c, err := p.Connect(context.Background(), testKey, testTarget, nil)
			if err != nil {
				t.Errorf("Connect: %v", err)
				return
			}
			conns <- c
		})
	}
	waitFor(t, "all Connects waiting on one dial", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		d := p.pending[testKey]
		return len(d) == 1 && d[0].waiters == n
	})
	close(release)
	wg.Wait()
	close(conns)
	for c := range conns {
		c.Close()
	}
	if got := dials.Load(); got != 1 {
		t.Errorf("%d concurrent Connects dialled %d times, want 1", n, got)
	}
}

func TestStreamLimitOpensConnection(t *testing.T) {
	tests := []struct {
		name      string
		poolLimit int
		serverMax uint32
		streams   int
		wantConns int64
	}{
		{name: "pool limit", poolLimit: 2, streams: 5, wantConns: 3},
		{name: "server limit below pool limit", poolLimit: 100, serverMax: 3, streams: 7, wantConns: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			tn := newTunnel(t, false, ServerOptions{MaxConcurrentStreams: tt.serverMax}, PoolOptions{MaxStreamsPerConn: tt.poolLimit}, echo)
			var open []Conn
			for range tt.streams {
				c := tn.connect(t, nil)
				// A round trip on each stream also lets the SETTINGS of a new
				// connection arrive before the next Connect.
				mustWrite(t, c, "x")
				mustRead(t, c, "x")
				open = append(open, c)
			}
			if got := tn.dialer.dials.Load(); got != tt.wantConns {
				t.Errorf("%d open streams took %d connections, want %d", len(open), got, tt.wantConns)
			}
			// A freed stream is reused before anything is dialled.
			open[0].Close()
			c := tn.connect(t, nil)
			mustWrite(t, c, "y")
			mustRead(t, c, "y")
			if got := tn.dialer.dials.Load(); got != tt.wantConns {
				t.Errorf("after freeing a stream, connections = %d, want %d", got, tt.wantConns)
			}
		})
	}
}

func TestPeerGoneRedials(t *testing.T) {
	checkLeaks(t)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, echo)
	c := tn.connect(t, nil)
	mustWrite(t, c, "a")
	mustRead(t, c, "a")
	tn.server.killConns()
	err := within(t, 10*time.Second, "read on a stream whose connection died", func() error {
		_, err := c.Read(make([]byte, 1))
		return err
	})
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Read after the server went away = %v, want a connection error", err)
	}
	c.Close()
	c2 := tn.connect(t, nil)
	mustWrite(t, c2, "b")
	mustRead(t, c2, "b")
	if got := tn.dialer.dials.Load(); got != 2 {
		t.Errorf("dials = %d, want 2", got)
	}
}

// A connection that died while idle in the pool is not handed out: the next
// Connect succeeds on a new one.
func TestIdlePeerGoneRedials(t *testing.T) {
	checkLeaks(t)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, echo)
	c := tn.connect(t, nil)
	mustWrite(t, c, "a")
	mustRead(t, c, "a")
	c.Close()
	tn.server.killConns()
	waitFor(t, "server to finish the killed connection", func() bool { return tn.server.served.Load() == 1 })
	c2 := tn.connect(t, nil)
	mustWrite(t, c2, "b")
	mustRead(t, c2, "b")
	if got := tn.dialer.dials.Load(); got != 2 {
		t.Errorf("dials = %d, want 2", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	checkLeaks(t)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{IdleTimeout: 50 * time.Millisecond}, echo)
	c := tn.connect(t, nil)
	mustWrite(t, c, "a")
	mustRead(t, c, "a")
	c.Close()
	waitFor(t, "the idle connection to close", func() bool { return tn.server.served.Load() == 1 })
	c2 := tn.connect(t, nil)
	mustWrite(t, c2, "b")
	mustRead(t, c2, "b")
	if got := tn.dialer.dials.Load(); got != 2 {
		t.Errorf("dials = %d, want 2", got)
	}
}

// A connection carrying a stream is not idle however long the stream is
// quiet.
func TestBusyConnNotIdle(t *testing.T) {
	checkLeaks(t)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{IdleTimeout: 20 * time.Millisecond}, echo)
	c := tn.connect(t, nil)
	mustWrite(t, c, "a")
	mustRead(t, c, "a")
	timer := time.NewTimer(200 * time.Millisecond) // ten idle timeouts
	<-timer.C
	mustWrite(t, c, "b")
	mustRead(t, c, "b")
	if got := tn.server.served.Load(); got != 0 {
		t.Errorf("server connections ended = %d, want 0", got)
	}
}

func TestEvict(t *testing.T) {
	checkLeaks(t)
	tn := newTunnel(t, true, ServerOptions{}, PoolOptions{}, echo)
	other := testKey
	other.SourcePod = "pod-b"
	victim := tn.connect(t, nil)
	survivor, err := tn.pool.Connect(context.Background(), other, testTarget, nil)
	if err != nil {
		t.Fatalf("Connect for %s: %v", other.SourcePod, err)
	}
	defer survivor.Close()
	for _, c := range []Conn{victim, survivor} {
		mustWrite(t, c, "a")
		mustRead(t, c, "a")
	}
	tn.pool.Evict(func(k Key) bool { return k.SourcePod == "pod-a" })
	err = within(t, 10*time.Second, "read on an evicted stream", func() error {
		_, err := victim.Read(make([]byte, 1))
		return err
	})
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Read on evicted stream = %v, want an error", err)
	}
	mustWrite(t, survivor, "b")
	mustRead(t, survivor, "b")
	victim.Close()
	c := tn.connect(t, nil)
	mustWrite(t, c, "c")
	mustRead(t, c, "c")
	if got := tn.dialer.dials.Load(); got != 3 {
		t.Errorf("dials = %d, want 3 (two keys, one re-dial after eviction)", got)
	}
}

func TestEvictFailsPendingDial(t *testing.T) {
	checkLeaks(t)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, echo)
	p := newTestPool(t, tn.dialer, PoolOptions{})
	dialing := make(chan struct{})
	p.dial = func(ctx context.Context, key Key) (net.Conn, error) {
		close(dialing)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.Connect(context.Background(), testKey, testTarget, nil)
		errc <- err
	}()
	<-dialing
	p.Evict(func(Key) bool { return true })
	err := within(t, 10*time.Second, "Connect during eviction", func() error { return <-errc })
	if !errors.Is(err, ErrEvicted) {
		t.Errorf("Connect = %v, want ErrEvicted", err)
	}
}

func TestConnectContext(t *testing.T) {
	checkLeaks(t)
	stuck := make(chan struct{})
	defer close(stuck)
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, func(context.Context, *Stream) { <-stuck })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := within(t, 10*time.Second, "Connect to a server that never answers", func() error {
		_, err := tn.pool.Connect(ctx, testKey, testTarget, nil)
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect = %v, want context.DeadlineExceeded", err)
	}
}

func TestPoolClose(t *testing.T) {
	checkLeaks(t)
	tn := newTunnel(t, true, ServerOptions{}, PoolOptions{}, echo)
	c := tn.connect(t, nil)
	mustWrite(t, c, "a")
	mustRead(t, c, "a")
	if err := tn.pool.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	err := within(t, 10*time.Second, "read after pool Close", func() error {
		_, err := c.Read(make([]byte, 1))
		return err
	})
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Read after pool Close = %v, want an error", err)
	}
	if _, err := tn.pool.Connect(context.Background(), testKey, testTarget, nil); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Connect after Close = %v, want ErrPoolClosed", err)
	}
	waitFor(t, "server to see the pool's connection close", func() bool { return tn.server.served.Load() == 1 })
}

func TestDialError(t *testing.T) {
	checkLeaks(t)
	dialErr := errors.New("no route to pod")
	p := newTestPool(t, &testDialer{}, PoolOptions{})
	p.dial = func(context.Context, Key) (net.Conn, error) { return nil, dialErr }
	if _, err := p.Connect(context.Background(), testKey, testTarget, nil); !errors.Is(err, dialErr) {
		t.Errorf("Connect = %v, want it to wrap %v", err, dialErr)
	}
}

func TestDialWrongALPN(t *testing.T) {
	checkLeaks(t)
	pki := getPKI(t)
	scfg := pki.serverConfig()
	scfg.NextProtos = []string{"http/1.1"}
	ts := startServer(t, serverConfig{tls: scfg}, echo)
	ccfg := pki.clientConfig(serverID)
	ccfg.NextProtos = []string{"h2", "http/1.1"}
	p := newTestPool(t, &testDialer{addr: ts.addr, tls: ccfg}, PoolOptions{})
	_, err := p.Connect(context.Background(), testKey, testTarget, nil)
	if err == nil {
		t.Fatal("Connect over http/1.1 ALPN succeeded, want an error")
	}
}
