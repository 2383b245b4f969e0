package hbonev2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
	// new connection has the server's SETTINGS, 100 are assumed, and
	// streams beyond a lower server limit wait for a free one, so do not
	// set this above what servers allow. Default 100.
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
	o.MaxFrameSize = min(max(o.MaxFrameSize, 16<<10), 1<<24-1)
	o.PingInterval = durationDefault(o.PingInterval, 30*time.Second)
	o.PingTimeout = durationDefault(o.PingTimeout, 15*time.Second)
	o.WriteTimeout = durationDefault(o.WriteTimeout, 30*time.Second)
	return o
}

// Pool opens HBONE streams over pooled HTTP/2 connections, one set of
// connections per Key. It is safe for concurrent use.
type Pool struct {
	dial   func(ctx context.Context, key Key) (net.Conn, error)
	opts   PoolOptions
	ctx    context.Context // ends with Close; every dial runs under it
	cancel context.CancelFunc
	dials  sync.WaitGroup // dial goroutines

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
	cc  *conn

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
		dial:    dial,
		opts:    opts,
		ctx:     ctx,
		cancel:  cancel,
		conns:   make(map[Key][]*poolConn),
		all:     make(map[*poolConn]struct{}),
		pending: make(map[Key][]*pendingDial),
	}
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
	pc, d, dead, err := p.acquireLocked(key)
	for _, pc := range dead {
		p.retire(pc)
	}
	return pc, d, err
}

// acquireLocked takes p.mu and reserves a stream or joins or starts a dial.
// It also returns the connections it found closed or draining, for the
// caller to retire.
func (p *Pool) acquireLocked(key Key) (*poolConn, *pendingDial, []*poolConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, nil, ErrPoolClosed
	}
	var dead []*poolConn
	for _, pc := range p.conns[key] {
		if pc.streams >= pc.limit {
			continue
		}
		// The connection's own lock is never held across I/O, so asking
		// it under p.mu is cheap.
		usable, peerMax := pc.cc.state()
		if !usable {
			dead = append(dead, pc)
			continue
		}
		if peerMax < pc.limit {
			pc.limit = peerMax
		}
		if pc.streams >= pc.limit {
			continue
		}
		pc.streams++
		p.stopIdleLocked(pc)
		return pc, nil, dead, nil
	}
	for _, d := range p.pending[key] {
		if d.waiters < p.opts.MaxStreamsPerConn {
			d.waiters++
			return nil, d, dead, nil
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
	return nil, d, dead, nil
}

// leave gives up a place among d's waiters.
func (p *Pool) leave(d *pendingDial) {
	p.mu.Lock()
	d.waiters--
	p.mu.Unlock()
}

// retireIfBroken retires pc if it can no longer carry streams and reports
// whether it did.
func (p *Pool) retireIfBroken(pc *poolConn) bool {
	if usable, _ := pc.cc.state(); usable {
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

func (p *Pool) newClientConn(ctx context.Context, key Key) (*conn, error) {
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
	cc, err := startClientConn(nc, p.opts)
	if err != nil {
		return nil, fmt.Errorf("start http2 with %v: %w", key.Dest, err)
	}
	return cc, nil
}

// startClientConn sends the client preface and SETTINGS on nc and starts
// the connection's reader, which Close waits for.
func startClientConn(nc net.Conn, opts PoolOptions) (*conn, error) {
	c := newConn(nc, false, connConfig{
		streamWindow: opts.StreamWindow,
		connWindow:   opts.ConnWindow,
		maxFrameSize: opts.MaxFrameSize,
		pingInterval: opts.PingInterval,
		pingTimeout:  opts.PingTimeout,
		writeTimeout: opts.WriteTimeout,
	})
	// The reader runs before the preface is written: on a synchronous
	// connection (net.Pipe) the server may write its SETTINGS first.
	go c.readLoop(func(uint32, *http2.MetaHeadersFrame) error { return nil })
	go c.writeLoop()
	c.wmu.Lock()
	_, err := c.bw.WriteString(http2.ClientPreface)
	if err == nil {
		err = c.writeSettingsLocked()
	}
	if err == nil {
		err = c.flushLocked()
	}
	c.unlockWrite()
	if err != nil {
		c.Close()
		return nil, err
	}
	c.startPing()
	return c, nil
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
// close pc (after unlocking, as closing waits for its reader).
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
	s, err := pc.cc.openStream(ctx, authority, hdr)
	if err != nil {
		p.release(pc)
		return nil, err
	}
	if s.status < 200 || s.status > 299 {
		s.close()
		p.release(pc)
		return nil, &StatusError{Code: s.status, Reason: s.reason}
	}
	return &clientConn{pool: p, pc: pc, s: s}, nil
}

// openStream sends a CONNECT for authority and waits, within ctx, for the
// answer. The stream outlives ctx.
func (c *conn) openStream(ctx context.Context, authority string, hdr http.Header) (*stream, error) {
	fields := make([]hpack.HeaderField, 0, 2+len(hdr))
	fields = append(fields, hpack.HeaderField{Name: ":method", Value: http.MethodConnect}, hpack.HeaderField{Name: ":authority", Value: authority})
	for k, vs := range hdr {
		name := strings.ToLower(k)
		switch name {
		case "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te":
			continue // connection-specific; not allowed in HTTP/2
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("send header %q: invalid name", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("send header %q: invalid value", k)
			}
			fields = append(fields, hpack.HeaderField{Name: name, Value: v})
		}
	}
	// Wait for a slot under the server's limit.
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			err := c.err
			c.mu.Unlock()
			return nil, err
		case c.goAwayRecv || c.nextID > maxWindow:
			c.mu.Unlock()
			return nil, errGoAway
		}
		if len(c.streams)+c.opening < int(c.peerMaxStreams) {
			c.opening++
			c.mu.Unlock()
			break
		}
		if c.slotFree == nil {
			c.slotFree = make(chan struct{})
		}
		ch := c.slotFree
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	// IDs must go out in increasing order, so one is taken only with the
	// write lock held.
	c.wmu.Lock()
	c.mu.Lock()
	c.opening--
	var err error
	switch {
	case c.closed:
		err = c.err
	case c.goAwayRecv:
		err = errGoAway
	}
	if err != nil {
		c.mu.Unlock()
		c.unlockWrite()
		return nil, err
	}
	id := c.nextID
	c.nextID += 2
	s := c.newStreamLocked(id)
	s.respDone = make(chan struct{})
	c.mu.Unlock()
	err = c.writeHeadersLocked(id, fields, false)
	if ferr := c.flushLocked(); err == nil {
		err = ferr
	}
	c.unlockWrite()
	if err != nil {
		s.close()
		return nil, err
	}
	select {
	case <-s.respDone:
	case <-ctx.Done():
		s.close()
		return nil, context.Cause(ctx)
	}
	c.mu.Lock()
	got, err := s.gotResp, s.err
	c.mu.Unlock()
	if !got {
		s.close()
		if err == nil {
			err = errConnClosed
		}
		return nil, err
	}
	return s, nil
}

// clientConn is the Conn of a stream the pool opened. It is safe for
// concurrent use as Conn describes.
type clientConn struct {
	pool *Pool
	pc   *poolConn
	s    *stream
	once sync.Once
}

func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.s.read(p)
	if err != nil && err != io.EOF && !errors.Is(err, net.ErrClosed) {
		err = fmt.Errorf("read hbone stream from server: %w", err)
	}
	return n, err
}

// Write sends p as DATA and returns once it is written to the connection,
// within the server's flow-control windows.
func (c *clientConn) Write(p []byte) (int, error) {
	n, err := c.s.write(p)
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errWriteClosed) {
		err = fmt.Errorf("write hbone stream to server: %w", err)
	}
	return n, err
}

// CloseWrite sends END_STREAM after the data written so far.
func (c *clientConn) CloseWrite() error { return c.s.closeWrite() }

func (c *clientConn) Close() error {
	c.once.Do(func() {
		c.s.close()
		c.pool.release(c.pc)
	})
	return nil
}
