//lint:file-ignore SA1019 x/net/http2's Server.ServeConn is the API that serves HTTP/2 on a connection the caller accepted and secured itself; net/http's replacement wants a listener and does its own TLS.

package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
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
	// HandshakeTimeout bounds the wait for the client's HTTP/2 preface.
	// Default 10 s.
	HandshakeTimeout time.Duration
	// PingInterval: after this long without a frame from the client the
	// server pings it, and closes the connection if no answer comes within
	// PingTimeout. Defaults 30 s and 15 s.
	PingInterval, PingTimeout time.Duration
	// WriteTimeout closes the connection when pending bytes could not be
	// written for this long (the peer stopped reading the connection as a
	// whole; per-stream back-pressure does not count). Default 30 s.
	WriteTimeout time.Duration
	// Logger receives x/net/http2's diagnostics about misbehaving clients,
	// at debug level. Nil discards them.
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
	o.HandshakeTimeout = durationDefault(o.HandshakeTimeout, 10*time.Second)
	o.PingInterval = durationDefault(o.PingInterval, 30*time.Second)
	o.PingTimeout = durationDefault(o.PingTimeout, 15*time.Second)
	o.WriteTimeout = durationDefault(o.WriteTimeout, 30*time.Second)
	return o
}

// durationDefault maps 0 to def and negative (disabled) to 0, which is how
// x/net/http2 spells "off".
func durationDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// errorLog adapts lg for x/net/http2, which otherwise logs through the
// standard library's global logger.
func errorLog(lg *slog.Logger) *log.Logger {
	if lg == nil {
		return log.New(io.Discard, "", 0)
	}
	return slog.NewLogLogger(lg.Handler(), slog.LevelDebug)
}

// ServeConn serves HBONE on c, which the caller has already secured and
// whose peer it has already identified, until c fails, the peer goes away or
// ctx ends; then it closes c and with it every stream on c. For each CONNECT
// with a valid :authority it calls handle on a goroutine of its own, with a
// context that ends with the stream; handle must call Accept or Reject (if it
// returns without either, the client gets 500). Other methods get 405 and a
// bad :authority 400, without calling handle. ServeConn returns when c is
// closed, every handle has returned and every stream has ended. After a
// protocol error x/net/http2 sends GOAWAY and keeps c open for up to a
// second so the client can read it, and ServeConn returns after that.
func ServeConn(ctx context.Context, c net.Conn, opts ServerOptions, handle func(ctx context.Context, s *Stream)) {
	opts = opts.withDefaults()
	srv := &server{handle: handle}

	var prefaceRead sync.Once
	if opts.HandshakeTimeout > 0 {
		c.SetReadDeadline(time.Now().Add(opts.HandshakeTimeout))
	}
	base := &http.Server{
		ErrorLog: errorLog(opts.Logger),
		// x/net/http2 reports StateActive once the preface is in; from
		// then on its pings and WriteTimeout watch the peer.
		ConnState: func(nc net.Conn, state http.ConnState) {
			if state == http.StateActive {
				prefaceRead.Do(func() { nc.SetReadDeadline(time.Time{}) })
			}
		},
	}
	h2 := &http2.Server{
		MaxConcurrentStreams:         opts.MaxConcurrentStreams,
		MaxReadFrameSize:             opts.MaxFrameSize,
		MaxUploadBufferPerConnection: opts.ConnWindow,
		MaxUploadBufferPerStream:     opts.StreamWindow,
		ReadIdleTimeout:              opts.PingInterval,
		PingTimeout:                  opts.PingTimeout,
		WriteByteTimeout:             opts.WriteTimeout,
	}
	// x/net/http2 does not watch its base context; closing c is what ends
	// the serve loop and, through it, every stream.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	h2.ServeConn(c, &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: base,
		Handler:    srv,
	})
	stop()
	c.Close()
	srv.streams.closeAndWait()
}

// server is the http.Handler of one ServeConn.
type server struct {
	handle  func(context.Context, *Stream)
	streams tracker
}

func (srv *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		refuse(w, http.StatusMethodNotAllowed, "HBONE takes only CONNECT")
		return
	}
	if r.Header.Get(":protocol") != "" {
		refuse(w, http.StatusBadRequest, "extended CONNECT is not HBONE")
		return
	}
	target, err := ParseAuthority(r.Host)
	if err != nil {
		refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	// One count for this goroutine, one for handle's.
	if !srv.streams.add(2) {
		// ServeConn is already waiting: the connection is gone.
		panic(http.ErrAbortHandler)
	}
	defer srv.streams.done()
	s := newStream(w, r, target)
	go func() {
		defer srv.streams.done()
		defer s.handleReturned()
		srv.handle(s.ctx, s)
	}()
	s.wait()
}

// refuse sets a refusal, sent as one HEADERS frame with END_STREAM when
// the x/net/http2 handler returns.
func refuse(w http.ResponseWriter, code int, reason string) {
	h := w.Header()
	h.Set(ReasonHeader, sanitizeReason(reason))
	suppressDefaultHeaders(h)
	w.WriteHeader(code)
}

// suppressDefaultHeaders stops x/net/http2 from adding Date and a
// Content-Length to a response: the nil entries count as present and
// encode to nothing, so each answer is exactly :status and our headers.
func suppressDefaultHeaders(h http.Header) {
	h["Date"] = nil
	h["Content-Length"] = nil
}

// tracker counts a connection's handler goroutines so ServeConn can wait for
// them. x/net/http2 may start a handler after its serve loop has returned,
// so adding is refused once waiting has begun instead of racing the
// WaitGroup.
type tracker struct {
	mu     sync.Mutex // guards closed and orders add before closeAndWait
	closed bool
	wg     sync.WaitGroup
}

func (t *tracker) add(n int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(n)
	return true
}

func (t *tracker) done() { t.wg.Done() }

func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}

// outcome is how a stream's x/net/http2 handler ends.
type outcome int

const (
	// returnNormally lets x/net/http2 finish the response: a refusal's
	// HEADERS with END_STREAM, or END_STREAM after an accepted stream's
	// data once both directions are done.
	returnNormally outcome = iota + 1
	// abort resets the stream (RST_STREAM INTERNAL_ERROR, x/net/http2's
	// answer to a handler that panics with http.ErrAbortHandler; it has no
	// other way for a handler to reset its stream).
	abort
)

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

	ctx  context.Context // the stream's; ends when it does
	w    http.ResponseWriter
	body io.ReadCloser

	ended chan struct{} // closed once result is set

	mu        sync.Mutex // guards the fields below
	answer    answer
	result    outcome
	writeDone bool // CloseWrite on the accepted Conn
	readDone  bool // its Read returned io.EOF
}

func newStream(w http.ResponseWriter, r *http.Request, target netip.AddrPort) *Stream {
	return &Stream{
		Target: target,
		Header: r.Header,
		ctx:    r.Context(),
		w:      w,
		body:   r.Body,
		ended:  make(chan struct{}),
	}
}

// wait runs on x/net/http2's handler goroutine and holds the stream open
// until its outcome is known. Returning lets x/net/http2 recycle the
// ResponseWriter, so it returns only when nothing can touch it any more;
// every other end is an abort, which leaves the ResponseWriter alone.
func (s *Stream) wait() {
	select {
	case <-s.ended:
	case <-s.ctx.Done():
		// The client reset the stream or the connection is gone.
		s.end(abort)
	}
	s.mu.Lock()
	result := s.result
	s.mu.Unlock()
	if result == abort {
		panic(http.ErrAbortHandler)
	}
}

// end records the stream's outcome; the first one wins.
func (s *Stream) end(o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked(o)
}

// endLocked is end with s.mu held.
func (s *Stream) endLocked(o outcome) {
	if s.result != 0 {
		return
	}
	s.result = o
	close(s.ended)
}

func (s *Stream) handleReturned() {
	s.mu.Lock()
	answered := s.answer != unanswered
	s.mu.Unlock()
	if !answered {
		s.Reject(http.StatusInternalServerError, "stream handler returned without answering")
	}
}

// errFlusher is what x/net/http2's ResponseWriter implements to report a
// failed flush.
type errFlusher interface{ FlushError() error }

// Accept answers 200 and returns the stream as a byte stream. Read returns
// io.EOF once the client has ended its direction (Conn.CloseWrite).
//
// CloseWrite on the returned Conn flushes and stops writes, but the client
// sees io.EOF only once its own direction has ended too: x/net/http2 can end
// a response stream only by returning from the handler, which also ends the
// request direction, so END_STREAM is held back until this Conn's Read has
// returned io.EOF, and is then sent at once (without waiting for Close).
func (s *Stream) Accept() (Conn, error) {
	s.mu.Lock()
	if s.answer != unanswered {
		s.mu.Unlock()
		return nil, fmt.Errorf("accept stream to %v: %w", s.Target, errAnswered)
	}
	s.answer = accepted
	s.mu.Unlock()

	suppressDefaultHeaders(s.w.Header())
	s.w.WriteHeader(http.StatusOK)
	flush, ok := s.w.(errFlusher)
	if !ok {
		s.end(abort)
		return nil, fmt.Errorf("accept stream to %v: response writer %T cannot flush", s.Target, s.w)
	}
	if err := flush.FlushError(); err != nil {
		s.end(abort)
		return nil, fmt.Errorf("accept stream to %v: %w", s.Target, err)
	}
	return &serverConn{s: s, w: s.w, flush: flush.FlushError, body: s.body}, nil
}

var errAnswered = errors.New("stream already answered")

// Reject refuses the stream with code, which must not be 2xx (e.g. 403 for
// a policy denial, 503 when the destination is unreachable), and reason in
// the x-weft-reason header. It does not wait for the answer to be sent.
func (s *Stream) Reject(code int, reason string) error {
	if code < 300 || code > 599 {
		return fmt.Errorf("reject stream to %v: status %d is not a refusal", s.Target, code)
	}
	s.mu.Lock()
	if s.answer != unanswered {
		s.mu.Unlock()
		return fmt.Errorf("reject stream to %v: %w", s.Target, errAnswered)
	}
	s.answer = rejected
	s.mu.Unlock()
	if err := s.ctx.Err(); err != nil {
		s.end(abort)
		return fmt.Errorf("reject stream to %v: %w", s.Target, context.Cause(s.ctx))
	}
	// The answer goes out when the handler goroutine returns, as one
	// HEADERS frame with END_STREAM.
	refuse(s.w, code, reason)
	s.end(returnNormally)
	return nil
}

// noteDone records that one direction of the accepted stream finished and
// ends the stream gracefully once both have.
func (s *Stream) noteDone(write bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if write {
		s.writeDone = true
	} else {
		s.readDone = true
	}
	if s.writeDone && s.readDone {
		s.endLocked(returnNormally)
	}
}

// serverConn is the Conn of an accepted stream.
type serverConn struct {
	s     *Stream
	w     http.ResponseWriter
	flush func() error
	body  io.ReadCloser

	closed  atomic.Bool
	readEOF atomic.Bool

	wmu     sync.Mutex // serialises writes; guards wclosed
	wclosed bool       // after it, w may be recycled and must not be touched
}

func (c *serverConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if c.readEOF.Load() {
		return 0, io.EOF
	}
	n, err := c.body.Read(p)
	switch {
	case err == nil:
	case err == io.EOF:
		c.readEOF.Store(true)
		c.s.noteDone(false)
	case c.closed.Load():
		err = net.ErrClosed
	default:
		err = fmt.Errorf("read hbone stream from client: %w", err)
	}
	return n, err
}

func (c *serverConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if c.wclosed {
		return 0, errWriteClosed
	}
	n, err := c.w.Write(p)
	if err == nil {
		// Every write goes out now: a proxied app's small writes must not
		// wait for more.
		err = c.flush()
	}
	if err != nil {
		if c.closed.Load() {
			return n, net.ErrClosed
		}
		return n, fmt.Errorf("write hbone stream to client: %w", err)
	}
	return n, nil
}

func (c *serverConn) CloseWrite() error {
	c.wmu.Lock()
	already := c.wclosed
	c.wclosed = true
	c.wmu.Unlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	if !already {
		c.s.noteDone(true)
	}
	return nil
}

func (c *serverConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	// After a graceful end this changes nothing; otherwise it resets the
	// stream, which fails a Write blocked in x/net/http2.
	c.s.end(abort)
	// Unblocks a local Read at once. x/net/http2 closes the body itself
	// when the handler ends; closing twice is fine.
	c.body.Close()
	return nil
}
