package hbonev2

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fuzzFrames builds client frames (after the preface) for FuzzServeConn's
// seeds.
type fuzzFrames struct {
	buf bytes.Buffer
	fr  *http2.Framer
}

func newFuzzFrames() *fuzzFrames {
	f := &fuzzFrames{}
	f.fr = http2.NewFramer(&f.buf, nil)
	return f
}

func (f *fuzzFrames) headers(stream uint32, end bool, fields ...string) *fuzzFrames {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: end})
	return f
}

func (f *fuzzFrames) connect(stream uint32, authority string) *fuzzFrames {
	return f.headers(stream, false, ":method", "CONNECT", ":authority", authority)
}

func fuzzSeeds() [][]byte {
	seed := func(build func(f *fuzzFrames)) []byte {
		f := newFuzzFrames()
		f.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		build(f)
		return f.buf.Bytes()
	}
	return [][]byte{
		nil,
		seed(func(*fuzzFrames) {}),
		seed(func(f *fuzzFrames) {
			f.connect(1, "10.1.2.3:8080")
			f.fr.WriteData(1, false, []byte("hello"))
			f.fr.WriteData(1, true, nil)
		}),
		seed(func(f *fuzzFrames) { f.connect(1, "10.1.2.3:8081") }),
		seed(func(f *fuzzFrames) {
			f.headers(1, true, ":method", "GET", ":scheme", "https", ":path", "/", ":authority", "x")
		}),
		seed(func(f *fuzzFrames) { f.connect(1, "backend:80") }),
		seed(func(f *fuzzFrames) {
			f.connect(1, "[fd00::1]:8080")
			f.fr.WriteData(1, false, []byte("x"))
			f.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			f.connect(3, "10.1.2.3:8080")
			f.fr.WriteWindowUpdate(3, 1000)
		}),
		seed(func(f *fuzzFrames) {
			f.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
			f.fr.WriteWindowUpdate(0, 1<<20)
			f.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}),
		seed(func(f *fuzzFrames) {
			f.connect(1, "10.1.2.3:8080")
			f.connect(1, "10.1.2.3:8080") // HEADERS twice on one stream
			f.fr.WriteData(7, false, []byte("unknown stream"))
		}),
	}
}

var fuzzPing = [8]byte{'w', 'e', 'f', 't', 'p', 'i', 'n', 'g'}

// FuzzServeConn feeds ServeConn the HTTP/2 client preface and then
// arbitrary bytes. ServeConn must neither panic nor hang: it returns once
// the client side is closed, whatever state the bytes left it in.
func FuzzServeConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(runFuzzServeConn)
}

func runFuzzServeConn(t *testing.T, data []byte) {
	{
		client, server := net.Pipe()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		served := make(chan struct{})
		go func() {
			defer close(served)
			ServeConn(ctx, server, ServerOptions{HandshakeTimeout: time.Second}, func(ctx context.Context, s *Stream) {
				if s.Target.Port()%2 == 1 {
					s.Reject(403, "odd port")
					return
				}
				c, err := s.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				io.Copy(c, c)
				c.CloseWrite()
			})
		}()
		// Read the server's frames, watching for the answer to our PING,
		// which tells that the server has processed everything before it,
		// or a GOAWAY, after which it reads nothing more.
		finished := make(chan struct{})
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			fr := http2.NewFramer(io.Discard, client)
			signalled := false
			for {
				frame, err := fr.ReadFrame()
				if err != nil {
					io.Copy(io.Discard, client)
					return
				}
				ping, isPing := frame.(*http2.PingFrame)
				_, isGoAway := frame.(*http2.GoAwayFrame)
				if !signalled && (isGoAway || isPing && ping.IsAck() && ping.Data == fuzzPing) {
					signalled = true
					close(finished)
				}
			}
		}()
		// net.Pipe writes block until the server reads, which it may have
		// stopped doing; closing the client ends them.
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			client.Write([]byte(http2.ClientPreface))
			client.Write(data)
			ping := newFuzzFrames()
			ping.fr.WritePing(false, fuzzPing)
			client.Write(ping.buf.Bytes())
		}()
		// Inputs that leave a frame unfinished swallow the PING; give them a
		// moment with the connection open instead.
		select {
		case <-finished:
		case <-served:
		case <-time.After(50 * time.Millisecond):
		}
		client.Close()
		<-wrote
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn did not return after the client closed")
		}
		<-drained
	}
}
