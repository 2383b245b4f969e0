//lint:file-ignore SA1019 x/net/http2's Transport.NewClientConn is the API that runs HTTP/2 over a connection the caller dialled and secured itself (from a pod's netns, with its SVID); net/http's replacement dials for itself.

package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Key identifies the connections a stream may share (ARCHITECTURE.md §3.2):
// streams of different source pods or identities never share a connection,
// because the connection leaves from the source pod's netns with its SVID.
// Key is comparable; it is a plain value, safe to copy and share.
type Key struct {
	SourcePod      string         // pod UID; the connection leaves from its netns
	SourceIdentity string         // SPIFFE ID the client presents
	DestIdentity   string         // SPIFFE ID expected of the server
	Dest           netip.AddrPort // destination pod ip:15008
}

// PoolOptions tunes a Pool. The zero value gives the defaults named below;
// a negative duration disables that timer. NewPool copies it.
type PoolOptions struct {
	// MaxStreamsPerConn caps the streams on one connection; the pool opens
	// another connection for the same key beyond it. The server's
	// SETTINGS_MAX_CONCURRENT_STREAMS caps it further once known; until a
	// new connection has the server's SETTINGS, x/net/http2 allows 100, and
	// streams beyond a lower server limit wait in x/net/http2 for a free
	// one, so do not set this above what servers allow. Default 100.
	MaxStreamsPerConn int
	// IdleTimeout closes a connection that has carried no stream for this
	// long. Default 60 s.
	IdleTimeout time.Duration
	// DialTimeout bounds one dial, TLS handshake included. Dials are shared
	// by concurrent Connects, so a single caller's context does not cancel
	// one. Default 10 s.
	DialTimeout time.Duration
	// StreamWindow and ConnWindow are the receive windows per stream and
	// per connection, in bytes. Defaults 4 MiB and 32 MiB.
	StreamWindow, ConnWindow int32
	// MaxFrameSize is the largest frame the pool accepts, 16 KiB..16 MiB.
	// Default 256 KiB, as for ServerOptions.MaxFrameSize.
	MaxFrameSize uint32
	// PingInterval: after this long without a frame from the server the
	// pool pings it, and drops the connection if no answer comes within
	// PingTimeout, so a server that vanished without a FIN is noticed.
	// Defaults 30 s and 15 s.
	PingInterval, PingTimeout time.Duration
	// WriteTimeout drops a connection whose pending bytes could not be
	// written for this long. Default 30 s.
	WriteTimeout time.Duration
}

func (o PoolOptions) withDefaults() PoolOptions {
	if o.MaxStreamsPerConn <= 0 {
		o.MaxStreamsPerConn = 100
	}
	o.IdleTimeout = durationDefault(o.IdleTimeout, 60*time.Second)
	o.DialTimeout = durationDefault(o.DialTimeout, 10*time.Second)
	if o.StreamWindow <= 0 {
		o.StreamWindow = 4 << 20
	}
	if o.ConnWindow <= 0 {
		o.ConnWindow = 32 << 20
	}
	if o.MaxFrameSize == 0 {
		o.MaxFrameSize = 256 << 10
	}
	o.PingInterval = durationDefault(o.PingInterval, 30*time.Second)
	o.PingTimeout = durationDefault(o.PingTimeout, 15*time.Second)
	o.WriteTimeout = durationDefault(o.WriteTimeout, 30*time.Second)
	return o
}

// Pool opens HBONE streams over pooled HTTP/2 connections, one set of
// connections per Key. It is safe for concurrent use.
//
// x/net/http2's client logs a few protocol violations by the server
// through the standard library's global logger; it has no hook to route
// them elsewhere.
type Pool struct {
	dial      func(ctx context.Context, key Key) (net.Conn, error)
	opts      PoolOptions
	transport *http2.Transport
	ctx       context.Context // ends with Close; every dial runs under it
	cancel    context.CancelFunc
	dials     sync.WaitGroup // dial goroutines

	mu      sync.Mutex // guards the fields below
	closed  bool
	conns   map[Key][]*poolConn // connections that may take new streams
	all     map[*poolConn]struct{}
	pending map[Key][]*pendingDial
}

// poolConn is one pooled HTTP/2 connection. Its fields other than key and
// cc are guarded by Pool.mu.
type poolConn struct {
	key Key
	cc  *http2.ClientConn

	streams int // acquired and not yet released
	limit   int // streams it may carry; lowered to the server's limit
	retired bool
	idle    *time.Timer
	idleGen int // invalidates an idle timer that could not be stopped
}

// pendingDial is a dial in flight that Connects for its key wait on.
type pendingDial struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int   // guarded by Pool.mu; at most MaxStreamsPerConn
	evicted bool  // guarded by Pool.mu
	err     error // set before done is closed
}

// NewPool returns a pool that opens connections with dial. dial must return
// a connection on which TLS is already done, with ALPN "h2" negotiated and
// the server's identity verified against key.DestIdentity; it should honour
// ctx.
func NewPool(dial func(ctx context.Context, key Key) (net.Conn, error), opts PoolOptions) *Pool {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{
		dial:      dial,
		opts:      opts,
		transport: newTransport(opts),
		ctx:       ctx,
		cancel:    cancel,
		conns:     make(map[Key][]*poolConn),
		all:       make(map[*poolConn]struct{}),
		pending:   make(map[Key][]*pendingDial),
	}
}

func newTransport(opts PoolOptions) *http2.Transport {
	// x/net/http2 reads window sizes only from net/http's HTTP2Config, so
	// a net/http Transport that is never used carries them.
	t1 := &http.Transport{HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerConnection: int(opts.ConnWindow),
		MaxReceiveBufferPerStream:     int(opts.StreamWindow),
		MaxReadFrameSize:              int(opts.MaxFrameSize),
		SendPingTimeout:               opts.PingInterval,
		PingTimeout:                   opts.PingTimeout,
		WriteByteTimeout:              opts.WriteTimeout,
	}}
	t, err := http2.ConfigureTransports(t1)
	if err != nil {
		// Only possible if t1 already spoke HTTP/2, which a new one does not.
		panic(fmt.Sprintf("hbone: configure http2 transport: %v", err))
	}
	t.DisableCompression = true
	return t
}

// Connect opens one stream to target over a pooled connection for key. It
// uses a connection with a free stream if there is one, and otherwise waits
// for a dial, sharing dials with concurrent Connects for the same key. ctx
// bounds only the opening: the stream lives until its Conn is closed. hdr
// is sent with the request and not modified. A refusal (non-2xx) returns
// *StatusError.
func (p *Pool) Connect(ctx context.Context, key Key, target netip.AddrPort, hdr http.Header) (Conn, error) {
	authority, err := formatAuthority(target)
	if err != nil {
		return nil, fmt.Errorf("connect to %v via %v: %w", target, key.Dest, err)
	}
	retried := false
	for {
		pc, d, err := p.acquire(key)
		if err != nil {
			return nil, fmt.Errorf("connect to %v via %v: %w", target, key.Dest, err)
		}
		if d != nil {
			select {
			case <-d.done:
				if d.err != nil {
					return nil, fmt.Errorf("connect to %v via %v: %w", target, key.Dest, d.err)
				}
			case <-ctx.Done():
				p.leave(d)
				return nil, fmt.Errorf("connect to %v via %v: %w", target, key.Dest, context.Cause(ctx))
			}
			continue
		}
		c, err := p.open(ctx, pc, authority, hdr)
		if err == nil {
			return c, nil
		}
		var refused *StatusError
		if !errors.As(err, &refused) && p.retireIfBroken(pc) && !retried && ctx.Err() == nil {
			// The connection died or got GOAWAY under the request; the
			// server has not seen it, so one more try on a fresh
			// connection is safe.
			retried = true
			continue
		}
		return nil, fmt.Errorf("connect to %v via %v: %w", target, key.Dest, err)
	}
}

// acquire reserves a stream on a connection for key, or returns the dial to
// wait for.
func (p *Pool) acquire(key Key) (*poolConn, *pendingDial, error) {
	pc, d, full, err := p.acquireLocked(key, true)
	if len(full) == 0 {
		return pc, d, err
	}
	// Some connection refused a stream below our own limit. x/net cannot
	// say why without taking its write lock, which a stalled peer can hold
	// for long, so that is asked here, outside p.mu, before dialling.
	for _, pc := range full {
		p.inspect(pc)
	}
	pc, d, _, err = p.acquireLocked(key, false)
	return pc, d, err
}

// acquireLocked takes p.mu and reserves a stream or joins or starts a dial.
// With inspectFirst it instead returns the connections that refused a
// stream for no reason the pool knows, if there are any.
func (p *Pool) acquireLocked(key Key, inspectFirst bool) (*poolConn, *pendingDial, []*poolConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, nil, ErrPoolClosed
	}
	var full []*poolConn
	for _, pc := range p.conns[key] {
		if pc.streams >= pc.limit {
			continue
		}
		if !pc.cc.ReserveNewRequest() {
			full = append(full, pc)
			continue
		}
		pc.streams++
		p.stopIdleLocked(pc)
		return pc, nil, nil, nil
	}
	if inspectFirst && len(full) > 0 {
		return nil, nil, full, nil
	}
	for _, d := range p.pending[key] {
		if d.waiters < p.opts.MaxStreamsPerConn {
			d.waiters++
			return nil, d, nil, nil
		}
	}
	ctx, cancel := context.WithCancel(p.ctx)
	if p.opts.DialTimeout > 0 {
		ctx, cancel = context.WithTimeout(p.ctx, p.opts.DialTimeout)
	}
	d := &pendingDial{done: make(chan struct{}), cancel: cancel, waiters: 1}
	p.pending[key] = append(p.pending[key], d)
	p.dials.Add(1)
	go p.dialConn(ctx, key, d)
	return nil, d, nil, nil
}

// leave gives up a place among d's waiters.
func (p *Pool) leave(d *pendingDial) {
	p.mu.Lock()
	d.waiters--
	p.mu.Unlock()
}

// inspect retires pc if it is closed or draining, or else lowers its limit
// to what the server allows.
func (p *Pool) inspect(pc *poolConn) {
	st := pc.cc.State()
	if st.Closed || st.Closing {
		p.retire(pc)
		return
	}
	p.mu.Lock()
	if st.MaxConcurrentStreams > 0 && int(st.MaxConcurrentStreams) < pc.limit {
		pc.limit = int(st.MaxConcurrentStreams)
	}
	p.mu.Unlock()
}

// retireIfBroken retires pc if it can no longer carry streams and reports
// whether it did.
func (p *Pool) retireIfBroken(pc *poolConn) bool {
	st := pc.cc.State()
	if !st.Closed && !st.Closing {
		return false
	}
	p.retire(pc)
	return true
}

// dialConn runs one dial for key and publishes its result to d's waiters.
func (p *Pool) dialConn(ctx context.Context, key Key, d *pendingDial) {
	defer p.dials.Done()
	defer d.cancel()
	cc, err := p.newClientConn(ctx, key)

	p.mu.Lock()
	list := p.pending[key]
	for i, x := range list {
		if x == d {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(p.pending, key)
	} else {
		p.pending[key] = list
	}
	switch {
	case p.closed:
		err = ErrPoolClosed
	case d.evicted:
		err = ErrEvicted
	case err != nil:
	default:
		pc := &poolConn{key: key, cc: cc, limit: p.opts.MaxStreamsPerConn}
		p.conns[key] = append(p.conns[key], pc)
		p.all[pc] = struct{}{}
		// Its waiters take it right away; if they all gave up it is idle.
		p.armIdleLocked(pc)
		cc = nil
	}
	d.err = err
	close(d.done)
	p.mu.Unlock()
	if cc != nil {
		cc.Close()
	}
}

func (p *Pool) newClientConn(ctx context.Context, key Key) (*http2.ClientConn, error) {
	nc, err := p.dial(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("dial %v: %w", key.Dest, err)
	}
	if tc, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		if proto := tc.ConnectionState().NegotiatedProtocol; proto != http2.NextProtoTLS {
			nc.Close()
			return nil, fmt.Errorf("dial %v: negotiated ALPN %q, want %q", key.Dest, proto, http2.NextProtoTLS)
		}
	}
	cc, err := p.transport.NewClientConn(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("start http2 with %v: %w", key.Dest, err)
	}
	return cc, nil
}

// armIdleLocked starts pc's idle timer. p.mu must be held and pc must carry
// no stream.
func (p *Pool) armIdleLocked(pc *poolConn) {
	if p.opts.IdleTimeout <= 0 {
		return
	}
	gen := pc.idleGen
	pc.idle = time.AfterFunc(p.opts.IdleTimeout, func() {
		p.mu.Lock()
		if pc.idleGen != gen || pc.streams > 0 || pc.retired {
			p.mu.Unlock()
			return
		}
		closeIt := p.retireLocked(pc)
		p.mu.Unlock()
		if closeIt {
			pc.cc.Close()
		}
	})
}

// stopIdleLocked stops pc's idle timer. p.mu must be held.
func (p *Pool) stopIdleLocked(pc *poolConn) {
	if pc.idle != nil {
		pc.idle.Stop()
		pc.idle = nil
		pc.idleGen++
	}
}

// retire stops new streams on pc and closes it once it carries none.
func (p *Pool) retire(pc *poolConn) {
	p.mu.Lock()
	closeIt := p.retireLocked(pc)
	p.mu.Unlock()
	if closeIt {
		pc.cc.Close()
	}
}

// retireLocked is retire with p.mu held; it reports whether the caller must
// close pc (after unlocking, as closing takes x/net's locks).
func (p *Pool) retireLocked(pc *poolConn) bool {
	if !pc.retired {
		pc.retired = true
		list := p.conns[pc.key]
		for i, x := range list {
			if x == pc {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(p.conns, pc.key)
		} else {
			p.conns[pc.key] = list
		}
	}
	p.stopIdleLocked(pc)
	if pc.streams > 0 {
		return false
	}
	if _, ok := p.all[pc]; !ok {
		return false // already closed
	}
	delete(p.all, pc)
	return true
}

// release returns a stream acquired on pc.
func (p *Pool) release(pc *poolConn) {
	p.mu.Lock()
	pc.streams--
	closeIt := false
	switch {
	case pc.streams > 0, p.closed:
	case pc.retired:
		closeIt = p.retireLocked(pc)
	default:
		p.armIdleLocked(pc)
	}
	p.mu.Unlock()
	if closeIt {
		pc.cc.Close()
	}
}

// Evict closes every connection whose key matches, ending its streams at
// once, and fails the dials in flight for matching keys with ErrEvicted.
// It is meant for a source pod that was deleted. match is called with the
// pool's lock held and must not call back into the pool.
func (p *Pool) Evict(match func(Key) bool) {
	var victims []*poolConn
	p.mu.Lock()
	for pc := range p.all {
		if match(pc.key) {
			pc.retired = true
			victims = append(victims, pc)
		}
	}
	for _, pc := range victims {
		p.retireLocked(pc)
		delete(p.all, pc)
	}
	for key, list := range p.pending {
		if match(key) {
			for _, d := range list {
				d.evicted = true
				d.cancel()
			}
		}
	}
	p.mu.Unlock()
	for _, pc := range victims {
		pc.cc.Close()
	}
}

// Close closes every connection, ending their streams, fails dials in
// flight and later Connects with ErrPoolClosed, and waits for the dials to
// return.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	victims := make([]*poolConn, 0, len(p.all))
	for pc := range p.all {
		victims = append(victims, pc)
		pc.retired = true
		p.stopIdleLocked(pc)
	}
	clear(p.all)
	clear(p.conns)
	p.mu.Unlock()
	p.cancel()
	var errs []error
	for _, pc := range victims {
		if err := pc.cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to %v: %w", pc.key.Dest, err))
		}
	}
	p.dials.Wait()
	return errors.Join(errs...)
}

// open sends the CONNECT on pc, which has a stream reserved for it.
func (p *Pool) open(ctx context.Context, pc *poolConn, authority string, hdr http.Header) (Conn, error) {
	// The stream outlives ctx; ctx only bounds the wait for the answer.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	pr, pw := io.Pipe()
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: authority},
		Host:          authority,
		Header:        hdr,
		Body:          pr,
		ContentLength: -1,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
	}).WithContext(sctx)
	stop := context.AfterFunc(ctx, cancel)
	resp, err := pc.cc.RoundTrip(req)
	waiting := stop()
	fail := func(err error) (Conn, error) {
		if resp != nil {
			resp.Body.Close()
		}
		cancel()
		pw.Close()
		p.release(pc)
		return nil, err
	}
	switch {
	case !waiting:
		return fail(context.Cause(ctx))
	case err != nil:
		return fail(err)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return fail(&StatusError{Code: resp.StatusCode, Reason: resp.Header.Get(ReasonHeader)})
	}
	return &clientConn{pool: p, pc: pc, body: resp.Body, pw: pw, cancel: cancel}, nil
}

// clientConn is the Conn of a stream the pool opened.
type clientConn struct {
	pool   *Pool
	pc     *poolConn
	body   io.ReadCloser // the response body: server to client
	pw     *io.PipeWriter
	cancel context.CancelFunc

	closed    atomic.Bool
	writeDone atomic.Bool
}

func (c *clientConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.body.Read(p)
	switch {
	case err == nil, err == io.EOF:
	case c.closed.Load():
		err = net.ErrClosed
	default:
		err = fmt.Errorf("read hbone stream from server: %w", err)
	}
	return n, err
}

// Write hands p to x/net/http2's request-body writer, which sends it as
// DATA frames and flushes each at once. It returns when the writer has taken
// all of p, not when the server has it.
func (c *clientConn) Write(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if c.writeDone.Load() {
		return 0, errWriteClosed
	}
	n, err := c.pw.Write(p)
	if err != nil {
		switch {
		case c.closed.Load():
			err = net.ErrClosed
		case c.writeDone.Load():
			err = errWriteClosed
		default:
			err = fmt.Errorf("write hbone stream to server: stream ended: %w", err)
		}
	}
	return n, err
}

// CloseWrite sends END_STREAM after the data written so far.
func (c *clientConn) CloseWrite() error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	c.writeDone.Store(true)
	return c.pw.Close()
}

func (c *clientConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.pw.CloseWithError(net.ErrClosed)
	// Closing an unfinished response body resets the stream
	// (RST_STREAM CANCEL); after both END_STREAMs it only cleans up.
	c.body.Close()
	c.cancel()
	c.pool.release(c.pc)
	return nil
}
