package hbonev2

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// The server's CloseWrite ends its direction at once: the client reads
// io.EOF while it is still writing, and the server still reads what it
// writes after that.
func TestServerHalfCloseWhileClientWrites(t *testing.T) {
	checkLeaks(t)
	conns := make(chan Conn, 1)
	tn := newTunnel(t, true, ServerOptions{}, PoolOptions{}, serverSide(conns))
	client := tn.connect(t, nil)
	server := recvConn(t, conns)

	mustWrite(t, server, "banner")
	if err := server.CloseWrite(); err != nil {
		t.Fatalf("server CloseWrite: %v", err)
	}
	mustRead(t, client, "banner")
	if rest := readAll(t, client); len(rest) != 0 {
		t.Errorf("client read %q after the server's CloseWrite, want EOF", rest)
	}
	for _, msg := range []string{"still ", "sending ", "after EOF"} {
		mustWrite(t, client, msg)
		mustRead(t, server, msg)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatalf("client CloseWrite: %v", err)
	}
	if rest := readAll(t, server); len(rest) != 0 {
		t.Errorf("server read %q, want EOF", rest)
	}
	// Both directions ended cleanly: Close releases without a reset.
	server.Close()
	client.Close()
}

// recordingConn keeps a copy of everything written to it and counts the
// writes.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// frameCounts parses what a server wrote and counts its frames by type.
func (c *recordingConn) frameCounts(tb testing.TB) map[http2.FrameType]int {
	tb.Helper()
	c.mu.Lock()
	data := bytes.Clone(c.buf.Bytes())
	c.mu.Unlock()
	fr := http2.NewFramer(io.Discard, bytes.NewReader(data))
	fr.SetMaxReadFrameSize(1<<24 - 1)
	counts := make(map[http2.FrameType]int)
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return counts
		}
		if err != nil {
			tb.Fatalf("parse recorded frames: %v", err)
		}
		counts[f.Header().Type]++
	}
}

// A bulk upload makes the server send WINDOW_UPDATEs only every MiB (per
// stream and for the connection), not after every read.
func TestWindowUpdateCoalescing(t *testing.T) {
	checkLeaks(t)
	client, raw := loopbackPair(t, false)
	server := &recordingConn{Conn: raw}
	const size = 16 << 20
	received := make(chan int64, 1)
	served := make(chan struct{})
	go func() {
		defer close(served)
		ServeConn(context.Background(), server, ServerOptions{}, func(_ context.Context, s *Stream) {
			c, err := s.Accept()
			if err != nil {
				received <- -1
				return
			}
			defer c.Close()
			// A proxy's copy loop: 32 KiB reads.
			n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, make([]byte, 32<<10))
			c.CloseWrite()
			received <- n
		})
	}()
	p := NewPool(func(context.Context, Key) (net.Conn, error) { return client, nil }, PoolOptions{})
	defer func() {
		p.Close()
		within(t, 10*time.Second, "ServeConn", func() bool { <-served; return true })
	}()
	c, err := p.Connect(context.Background(), testKey, testTarget, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	if err := writePattern(c, 1, size); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	if n := within(t, 30*time.Second, "server read", func() int64 { return <-received }); n != size {
		t.Fatalf("server read %d bytes, want %d", n, size)
	}
	readAll(t, c)
	counts := server.frameCounts(t)
	// 16 MiB at one credit per MiB is 16 per stream and 16 for the
	// connection, plus the connection window's first update.
	wu := counts[http2.FrameWindowUpdate]
	t.Logf("server frames over a %d MiB upload: %v; %d writes", size>>20, counts, server.writes)
	if wu > 2*(size>>20)+2 {
		t.Errorf("server sent %d WINDOW_UPDATEs for %d MiB, want at most %d", wu, size>>20, 2*(size>>20)+2)
	}
	if wu < 2 {
		t.Errorf("server sent %d WINDOW_UPDATEs, want some: a 16 MiB upload needs credit", wu)
	}
}

// A stream's context ends when the client's connection goes away, not only
// when ServeConn's context does.
func TestStreamContextEndsWithConnection(t *testing.T) {
	checkLeaks(t)
	accepted := make(chan struct{})
	ended := make(chan struct{})
	tn := newTunnel(t, false, ServerOptions{}, PoolOptions{}, func(ctx context.Context, s *Stream) {
		c, err := s.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		close(accepted)
		<-ctx.Done()
		close(ended)
	})
	tn.connect(t, nil)
	within(t, 10*time.Second, "Accept", func() bool { <-accepted; return true })
	tn.pool.Close()
	within(t, 10*time.Second, "the stream's context to end", func() bool { <-ended; return true })
}

// Connect fails, without hanging or leaking, against servers that break
// HTTP/2 after the CONNECT arrives.
func TestConnectBadServers(t *testing.T) {
	tests := []struct {
		name string
		// answer plays the server once stream 1's HEADERS are in.
		answer func(fr *http2.Framer)
	}{
		{name: "DATA before HEADERS", answer: func(fr *http2.Framer) { fr.WriteData(1, false, []byte("x")) }},
		{name: "PUSH_PROMISE", answer: func(fr *http2.Framer) {
			fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}},
		{name: "HEADERS without status", answer: func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}, EndHeaders: true})
		}},
		{name: "HEADERS on an even stream", answer: func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: []byte{0x88}, EndHeaders: true})
		}},
		{name: "CONTINUATION out of sequence", answer: func(fr *http2.Framer) { fr.WriteContinuation(1, true, []byte{0x88}) }},
		{name: "window overflow", answer: func(fr *http2.Framer) { fr.WriteWindowUpdate(0, 1<<31-1) }},
		{name: "GOAWAY", answer: func(fr *http2.Framer) { fr.WriteGoAway(0, http2.ErrCodeNo, nil) }},
		{name: "reset", answer: func(fr *http2.Framer) { fr.WriteRSTStream(1, http2.ErrCodeRefusedStream) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			client, server := loopbackPair(t, false)
			go func() {
				// Whatever the client sends after the CONNECT is drained,
				// so the test's writes never block.
				defer io.Copy(io.Discard, server)
				if _, err := io.ReadFull(server, make([]byte, len(http2.ClientPreface))); err != nil {
					return
				}
				fr := http2.NewFramer(server, server)
				fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if _, ok := f.(*http2.HeadersFrame); ok {
						break
					}
				}
				tt.answer(fr)
			}()
			var dials int
			p := NewPool(func(context.Context, Key) (net.Conn, error) {
				if dials++; dials > 1 {
					return nil, io.ErrUnexpectedEOF // one server only
				}
				return client, nil
			}, PoolOptions{})
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := within(t, 10*time.Second, "Connect", func() error {
				c, err := p.Connect(ctx, testKey, testTarget, nil)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err == nil || ctx.Err() != nil {
				t.Errorf("Connect = %v, want a prompt error", err)
			}
		})
	}
}
