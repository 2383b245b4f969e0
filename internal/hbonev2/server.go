package hbonev2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ServerOptions tunes ServeConn. The zero value gives the defaults named
// below; a negative duration disables that timer. ServeConn copies it, so
// one value may be shared by concurrent ServeConn calls.
type ServerOptions struct {
	// MaxConcurrentStreams is the number of streams a client may have open
	// on one connection (SETTINGS_MAX_CONCURRENT_STREAMS). Default 1000.
	MaxConcurrentStreams uint32
	// StreamWindow is how many bytes a client may send on one stream ahead
	// of the handler reading them. Default 4 MiB, so one stream fills a
	// cross-node link without waiting for window updates.
	StreamWindow int32
	// ConnWindow is the same for all streams of a connection together.
	// Default 32 MiB.
	ConnWindow int32
	// MaxFrameSize is the largest frame the server accepts, in bytes,
	// 16 KiB..16 MiB. Default 256 KiB: bulk throughput was the same from
	// 64 KiB to 1 MiB, and smaller frames hold other streams of the
	// connection up for less.
	MaxFrameSize uint32
	// HandshakeTimeout bounds the wait for the client's HTTP/2 preface and
	// first SETTINGS. Default 10 s.
	HandshakeTimeout time.Duration
	// PingInterval: after this long without a frame from the client the
	// server pings it, and closes the connection if no answer comes within
	// PingTimeout. Defaults 30 s and 15 s.
	PingInterval, PingTimeout time.Duration
	// WriteTimeout closes the connection when pending bytes could not be
	// written for this long (the peer stopped reading the connection as a
	// whole; per-stream back-pressure does not count). Default 30 s.
	WriteTimeout time.Duration
	// Logger receives diagnostics about misbehaving clients, at debug
	// level. Nil discards them.
	Logger *slog.Logger
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 1000
	}
	if o.StreamWindow <= 0 {
		o.StreamWindow = 4 << 20
	}
	if o.ConnWindow <= 0 {
		o.ConnWindow = 32 << 20
	}
	if o.MaxFrameSize == 0 {
		o.MaxFrameSize = 256 << 10
	}
	o.MaxFrameSize = min(max(o.MaxFrameSize, 16<<10), 1<<24-1)
	o.HandshakeTimeout = durationDefault(o.HandshakeTimeout, 10*time.Second)
	o.PingInterval = durationDefault(o.PingInterval, 30*time.Second)
	o.PingTimeout = durationDefault(o.PingTimeout, 15*time.Second)
	o.WriteTimeout = durationDefault(o.WriteTimeout, 30*time.Second)
	return o
}

// durationDefault maps 0 to def and negative (disabled) to 0.
func durationDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// ServeConn serves HBONE on c, which the caller has already secured and
// whose peer it has already identified, until c fails, the peer goes away or
// ctx ends; then it closes c and with it every stream on c. For each CONNECT
// with a valid :authority it calls handle on a goroutine of its own, with a
// context that ends with the stream; handle must call Accept or Reject (if it
// returns without either, the client gets 500). Other methods get 405 and a
// bad :authority 400, without calling handle. ServeConn returns when c is
// closed, every handle has returned and every stream has ended. After a
// protocol error it sends GOAWAY and keeps c open for up to a second so the
// client can read it, and returns after that.
//
// The calling goroutine is the connection's only reader.
func ServeConn(ctx context.Context, c net.Conn, opts ServerOptions, handle func(ctx context.Context, s *Stream)) {
	opts = opts.withDefaults()
	hc := newConn(c, true, connConfig{
		maxStreams:   opts.MaxConcurrentStreams,
		streamWindow: opts.StreamWindow,
		connWindow:   opts.ConnWindow,
		maxFrameSize: opts.MaxFrameSize,
		pingInterval: opts.PingInterval,
		pingTimeout:  opts.PingTimeout,
		writeTimeout: opts.WriteTimeout,
	})
	srv := &server{c: hc, ctx: ctx, handle: handle, log: opts.Logger}
	stop := context.AfterFunc(ctx, func() { hc.close(context.Cause(ctx)) })
	go hc.writeLoop()
	defer func() {
		stop()
		hc.close(errConnClosed)
		<-hc.writerDone
		srv.handlers.Wait()
	}()
	if err := srv.handshake(opts.HandshakeTimeout); err != nil {
		srv.debug("hbone handshake failed", err)
		close(hc.readerDone)
		return
	}
	hc.startPing()
	hc.readLoop(srv.newStream)
	srv.debug("hbone connection ended", hc.err)
}

// server is the state of one ServeConn.
type server struct {
	c        *conn
	ctx      context.Context
	handle   func(context.Context, *Stream)
	log      *slog.Logger
	handlers sync.WaitGroup
}

func (srv *server) debug(msg string, err error) {
	if srv.log != nil && err != nil {
		srv.log.Debug(msg, "remote", srv.c.nc.RemoteAddr().String(), "error", err)
	}
}

// handshake reads the client preface and its first SETTINGS within
// timeout, sending the server's SETTINGS in between.
func (srv *server) handshake(timeout time.Duration) error {
	c := srv.c
	if timeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(timeout))
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, preface); err != nil {
		return fmt.Errorf("read client preface: %w", err)
	}
	if string(preface) != http2.ClientPreface {
		c.nc.Close()
		return errors.New("read client preface: not HTTP/2")
	}
	// The SETTINGS go into the buffer now, ahead of any HEADERS, and
	// writeLoop sends them: the reader never writes to the socket.
	c.wmu.Lock()
	err := c.writeSettingsLocked()
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("write server settings: %w", err)
	}
	c.mu.Lock()
	c.queueLocked(ctrlFrame{kind: ctrlFlush})
	c.mu.Unlock()
	c.kickFromReader()
	// The read loop insists on SETTINGS first and lifts the deadline
	// once they are in.
	return nil
}

// newStream handles HEADERS that open a stream. It runs on the reader.
func (srv *server) newStream(id uint32, f *http2.MetaHeadersFrame) error {
	c := srv.c
	c.mu.Lock()
	defer c.kickFromReader()
	defer c.mu.Unlock()
	c.lastPeerID = id
	if c.closed || c.goAwaySent {
		return nil
	}
	if len(c.streams) >= int(c.cfg.maxStreams) {
		c.queueLocked(ctrlFrame{kind: ctrlReset, id: id, code: http2.ErrCodeRefusedStream})
		return nil
	}
	method := f.PseudoValue("method")
	authority := f.PseudoValue("authority")
	hasPath := f.PseudoValue("path") != "" || f.PseudoValue("scheme") != ""
	protocol := f.PseudoValue("protocol")
	s := c.newStreamLocked(id)
	s.recvEnd = f.StreamEnded()
	refuse := func(code int, reason string, allow bool) error {
		s.sentEnd = true
		c.queueLocked(ctrlFrame{kind: ctrlRefuse, id: id, status: code, reason: reason, allow: allow, rstAfter: !s.recvEnd})
		c.removeLocked(s)
		return nil
	}
	switch {
	case method == "":
		c.removeLocked(s)
		return streamError(id, http2.ErrCodeProtocol)
	case f.Truncated:
		return refuse(http.StatusRequestHeaderFieldsTooLarge, "header list too large", false)
	case method != http.MethodConnect:
		if !hasPath {
			c.removeLocked(s)
			return streamError(id, http2.ErrCodeProtocol)
		}
		return refuse(http.StatusMethodNotAllowed, "HBONE takes only CONNECT", true)
	case protocol != "":
		return refuse(http.StatusBadRequest, "extended CONNECT is not HBONE", false)
	case hasPath:
		// RFC 9113 §8.5: a CONNECT has neither :scheme nor :path.
		c.removeLocked(s)
		return streamError(id, http2.ErrCodeProtocol)
	}
	target, err := ParseAuthority(authority)
	if err != nil {
		return refuse(http.StatusBadRequest, err.Error(), false)
	}
	hdr := make(http.Header, len(f.Fields))
	for _, hf := range f.RegularFields() {
		k := http.CanonicalHeaderKey(hf.Name)
		hdr[k] = append(hdr[k], hf.Value)
	}
	ctx, cancel := context.WithCancelCause(srv.ctx)
	s.cancel = cancel
	st := &Stream{Target: target, Header: hdr, ctx: ctx, s: s}
	srv.handlers.Add(1)
	go func() {
		defer srv.handlers.Done()
		defer st.handleReturned()
		srv.handle(ctx, st)
	}()
	return nil
}

type answer int

const (
	unanswered answer = iota
	accepted
	rejected
)

// Stream is one CONNECT the server received. Target and Header are set
// before handle is called and must not be modified. Exactly one of Accept
// and Reject may be called, from any goroutine; Stream is safe for
// concurrent use.
type Stream struct {
	// Target is the parsed :authority, the destination the client's app
	// dialled.
	Target netip.AddrPort
	// Header holds the request's headers (not the pseudo-headers).
	Header http.Header

	ctx context.Context // the stream's; ends when it does
	s   *stream

	mu     sync.Mutex // guards answer
	answer answer
}

var errAnswered = errors.New("stream already answered")

func (st *Stream) claim(a answer) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.answer != unanswered {
		return false
	}
	st.answer = a
	return true
}

func (st *Stream) handleReturned() {
	st.mu.Lock()
	answered := st.answer != unanswered
	st.mu.Unlock()
	if !answered {
		st.Reject(http.StatusInternalServerError, "stream handler returned without answering")
	}
}

// Accept answers 200 and returns the stream as a byte stream. Read returns
// io.EOF once the client has ended its direction (Conn.CloseWrite).
// CloseWrite on the returned Conn sends END_STREAM at once: the client
// sees io.EOF after the data written before it, while its own direction
// stays open.
func (st *Stream) Accept() (Conn, error) {
	if !st.claim(accepted) {
		return nil, fmt.Errorf("accept stream to %v: %w", st.Target, errAnswered)
	}
	s := st.s
	c := s.c
	c.wmu.Lock()
	c.mu.Lock()
	err := s.err
	if err == nil && c.closed {
		err = c.err
	}
	c.mu.Unlock()
	if err == nil {
		err = c.writeHeadersLocked(s.id, []hpack.HeaderField{{Name: ":status", Value: "200"}}, false)
		if ferr := c.flushLocked(); err == nil {
			err = ferr
		}
	}
	c.unlockWrite()
	if err != nil {
		s.close()
		return nil, fmt.Errorf("accept stream to %v: %w", st.Target, err)
	}
	return &serverConn{s: s}, nil
}

// Reject refuses the stream with code, which must not be 2xx (e.g. 403 for
// a policy denial, 503 when the destination is unreachable), and reason in
// the x-weft-reason header. It does not wait for the answer to be sent.
func (st *Stream) Reject(code int, reason string) error {
	if code < 300 || code > 599 {
		return fmt.Errorf("reject stream to %v: status %d is not a refusal", st.Target, code)
	}
	if !st.claim(rejected) {
		return fmt.Errorf("reject stream to %v: %w", st.Target, errAnswered)
	}
	s := st.s
	c := s.c
	c.mu.Lock()
	if s.err != nil || s.removed {
		err := s.err
		if err == nil {
			err = errStreamEnded
		}
		c.mu.Unlock()
		return fmt.Errorf("reject stream to %v: %w", st.Target, err)
	}
	s.sentEnd = true
	c.queueLocked(ctrlFrame{kind: ctrlRefuse, id: s.id, status: code, reason: reason, rstAfter: !s.recvEnd})
	s.failLocked(errStreamEnded)
	c.removeLocked(s)
	c.mu.Unlock()
	c.kick()
	return nil
}

// serverConn is the Conn of an accepted stream. It is safe for concurrent
// use as Conn describes.
type serverConn struct{ s *stream }

func (c *serverConn) Read(p []byte) (int, error) {
	n, err := c.s.read(p)
	if err != nil && err != io.EOF && !errors.Is(err, net.ErrClosed) {
		err = fmt.Errorf("read hbone stream from client: %w", err)
	}
	return n, err
}

func (c *serverConn) Write(p []byte) (int, error) {
	n, err := c.s.write(p)
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errWriteClosed) {
		err = fmt.Errorf("write hbone stream to client: %w", err)
	}
	return n, err
}

func (c *serverConn) CloseWrite() error { return c.s.closeWrite() }

func (c *serverConn) Close() error {
	c.s.close()
	return nil
}
