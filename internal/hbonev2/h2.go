package hbonev2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// initialWindow is HTTP/2's window before SETTINGS say otherwise.
	initialWindow = 65535
	maxWindow     = 1<<31 - 1
	// maxCreditBatch caps how much consumed window is held back before a
	// WINDOW_UPDATE returns it, so big windows still get credit often
	// enough for the sender never to stall.
	maxCreditBatch = 1 << 20
	// maxQueuedCtrl bounds control frames waiting for the write lock: a
	// peer that floods PINGs or resets without reading loses the
	// connection instead of growing our memory.
	maxQueuedCtrl = 10000
	// goAwayLinger is how long a connection stays open after a GOAWAY for
	// a protocol error, so the peer can read it before the close resets.
	goAwayLinger = time.Second
	// maxHeaderList bounds a decoded header block.
	maxHeaderList = 64 << 10
	// defaultPeerMaxStreams is assumed until the peer's SETTINGS arrive,
	// as x/net/http2 does.
	defaultPeerMaxStreams = 100
	writeBufferSize       = 32 << 10
	// maxIdleBuffer is the largest receive buffer a drained stream keeps.
	maxIdleBuffer  = 256 << 10
	readBufferSize = 64 << 10
)

var (
	errConnClosed  = errors.New("hbone connection closed")
	errGoAway      = errors.New("hbone connection going away")
	errPingTimeout = errors.New("hbone peer did not answer ping")
	errLocalReset  = errors.New("hbone stream closed locally")
	errPeerClosed  = errors.New("hbone connection closed by peer")
)

// protoError is a connection error: the connection ends with GOAWAY code.
type protoError struct {
	code   http2.ErrCode
	reason string
}

func (e protoError) Error() string {
	return fmt.Sprintf("http2 connection error %v: %s", e.code, e.reason)
}

func connError(code http2.ErrCode, format string, args ...any) error {
	return protoError{code: code, reason: fmt.Sprintf(format, args...)}
}

func streamError(id uint32, code http2.ErrCode) error {
	return http2.StreamError{StreamID: id, Code: code}
}

// resetError is what a stream's operations fail with after a peer's
// RST_STREAM.
type resetError struct{ code http2.ErrCode }

func (e resetError) Error() string { return fmt.Sprintf("stream reset by peer: %v", e.code) }

// connConfig is the part of ServerOptions and PoolOptions a connection
// needs.
type connConfig struct {
	maxStreams   uint32 // streams the peer may open; 0 for a client
	streamWindow int32
	connWindow   int32
	maxFrameSize uint32
	pingInterval time.Duration
	pingTimeout  time.Duration
	writeTimeout time.Duration
}

type ctrlKind uint8

const (
	ctrlSettingsAck ctrlKind = iota + 1
	ctrlPing
	ctrlPingAck
	ctrlReset
	ctrlWindow
	ctrlTableSize
	ctrlGoAway
	ctrlRefuse
	ctrlFlush // nothing to write, but flush what is buffered
)

// ctrlFrame is a frame queued by a goroutine that must not wait for the
// write lock (the reader, Read, Close); whoever holds the lock next writes
// it.
type ctrlFrame struct {
	kind     ctrlKind
	id       uint32
	val      uint32
	code     http2.ErrCode
	data     [8]byte
	status   int
	reason   string
	allow    bool // a 405 also names the allowed method
	rstAfter bool // a refusal ends the request direction too
}

// conn is one HTTP/2 connection, either end. One reader goroutine (the
// ServeConn caller's, or the pool's per connection) decodes frames and
// hands DATA to stream buffers; every other goroutine writes its own
// frames under wmu and flushes once per call, so a 1 KiB Write is one TLS
// record and one syscall. Goroutines that must not block on a stuck
// socket (the reader, Read, Close) queue control frames instead and only
// try the write lock.
//
// Lock order: wmu before mu. mu is never held across I/O.
type conn struct {
	nc         net.Conn
	server     bool
	cfg        connConfig
	fr         *http2.Framer // reads from br (reader only), writes to bw (under wmu)
	br         *bufio.Reader
	readerDone chan struct{} // closed when the read loop returns
	wake       chan struct{} // asks writeLoop to write queued control frames
	done       chan struct{} // closed when the connection shuts down
	writerDone chan struct{} // closed when writeLoop returns
	lastRead   atomic.Int64  // UnixNano of the last frame read
	ctrlN      atomic.Int32  // len(ctrl), readable without mu

	wmu   sync.Mutex // guards the fields below and the Framer's write side
	bw    *bufio.Writer
	henc  *hpack.Encoder
	hbuf  bytes.Buffer
	hdr   [9]byte
	spare []ctrlFrame

	mu             sync.Mutex // guards the fields below
	closed         bool
	err            error // why it closed
	ctrl           []ctrlFrame
	streams        map[uint32]*stream
	nextID         uint32 // next stream this end opens
	lastPeerID     uint32 // highest stream the peer opened
	opening        int    // client: slots reserved, HEADERS not yet sent
	slotFree       chan struct{}
	sendWin        int64 // connection credit the peer granted us
	recvWin        int64 // connection credit we granted the peer
	recvUnacked    int64 // consumed, not yet granted again
	peerInitWin    int64
	peerMaxFrame   uint32
	peerMaxStreams uint32
	sawSettings    bool
	goAwayRecv     bool
	goAwaySent     bool
	pingOut        bool
	pingAt         time.Time
	pingTimer      *time.Timer
}

func newConn(nc net.Conn, server bool, cfg connConfig) *conn {
	c := &conn{
		nc:             nc,
		server:         server,
		cfg:            cfg,
		br:             bufio.NewReaderSize(nc, readBufferSize),
		bw:             bufio.NewWriterSize(nc, writeBufferSize),
		readerDone:     make(chan struct{}),
		wake:           make(chan struct{}, 1),
		done:           make(chan struct{}),
		writerDone:     make(chan struct{}),
		streams:        make(map[uint32]*stream),
		nextID:         1,
		sendWin:        initialWindow,
		recvWin:        int64(cfg.connWindow),
		peerInitWin:    initialWindow,
		peerMaxFrame:   16 << 10,
		peerMaxStreams: defaultPeerMaxStreams,
	}
	if server {
		c.nextID = 2 // a server opens none; even IDs are never valid
	}
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(cfg.maxFrameSize)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = maxHeaderList
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// writeSettingsLocked writes our SETTINGS and the connection window
// beyond the initial one. c.wmu must be held.
func (c *conn) writeSettingsLocked() error {
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.streamWindow)},
		{ID: http2.SettingMaxFrameSize, Val: c.cfg.maxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	}
	if c.server {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.maxStreams})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		return err
	}
	if extra := int64(c.cfg.connWindow) - initialWindow; extra > 0 {
		return c.fr.WriteWindowUpdate(0, uint32(extra))
	}
	return nil
}

// --- writing ---

// queueLocked queues a control frame. c.mu must be held; the caller then
// calls kick after unlocking.
func (c *conn) queueLocked(f ctrlFrame) {
	if c.closed && f.kind != ctrlGoAway {
		return
	}
	if len(c.ctrl) >= maxQueuedCtrl {
		c.closeLocked(fmt.Errorf("queue control frame: %w", connError(http2.ErrCodeEnhanceYourCalm, "peer does not read its control frames")))
		return
	}
	c.ctrl = append(c.ctrl, f)
	c.ctrlN.Store(int32(len(c.ctrl)))
}

// kick writes queued control frames if the write lock is free; if it is
// taken, its holder writes them before it lets go (see unlockWrite).
func (c *conn) kick() {
	for c.ctrlN.Load() > 0 {
		if !c.wmu.TryLock() {
			return
		}
		c.flushLocked()
		c.wmu.Unlock()
	}
}

// kickFromReader has writeLoop write queued control frames. The reader
// must never write itself: if both ends' readers did, on an unbuffered
// connection (net.Pipe) or with both socket buffers full each would wait
// for the other to read.
func (c *conn) kickFromReader() {
	if c.ctrlN.Load() == 0 {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// writeLoop writes the control frames the reader queued, until the
// connection shuts down. It is the connection's only goroutine besides
// the reader and is owned by it: Close waits for both.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	for {
		select {
		case <-c.wake:
			c.wmu.Lock()
			if c.ctrlN.Load() > 0 {
				c.flushLocked()
			}
			c.unlockWrite()
		case <-c.done:
			return
		}
	}
}

// unlockWrite releases the write lock and then picks up control frames
// queued by goroutines whose TryLock failed while it was held.
func (c *conn) unlockWrite() {
	c.wmu.Unlock()
	c.kick()
}

// writeCtrlLocked writes the queued control frames into bw. c.wmu must
// be held.
func (c *conn) writeCtrlLocked() error {
	c.mu.Lock()
	q := c.ctrl
	c.ctrl = c.spare[:0]
	c.ctrlN.Store(0)
	c.mu.Unlock()
	var err error
	for i := range q {
		if err == nil {
			err = c.writeCtrlFrameLocked(&q[i])
		}
		q[i] = ctrlFrame{}
	}
	c.spare = q[:0]
	return err
}

func (c *conn) writeCtrlFrameLocked(f *ctrlFrame) error {
	switch f.kind {
	case ctrlSettingsAck:
		return c.fr.WriteSettingsAck()
	case ctrlPing:
		return c.fr.WritePing(false, f.data)
	case ctrlPingAck:
		return c.fr.WritePing(true, f.data)
	case ctrlReset:
		return c.fr.WriteRSTStream(f.id, f.code)
	case ctrlWindow:
		return c.fr.WriteWindowUpdate(f.id, f.val)
	case ctrlTableSize:
		c.henc.SetMaxDynamicTableSizeLimit(f.val)
	case ctrlGoAway:
		return c.fr.WriteGoAway(f.id, f.code, nil)
	case ctrlRefuse:
		fields := []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(f.status)}}
		if f.allow {
			fields = append(fields, hpack.HeaderField{Name: "allow", Value: "CONNECT"})
		}
		fields = append(fields, hpack.HeaderField{Name: ReasonHeader, Value: sanitizeReason(f.reason)})
		if err := c.writeHeadersLocked(f.id, fields, true); err != nil {
			return err
		}
		if f.rstAfter {
			return c.fr.WriteRSTStream(f.id, http2.ErrCodeNo)
		}
	}
	return nil
}

// writeHeadersLocked encodes fields and writes them as HEADERS and, if
// the block exceeds the peer's frame size, CONTINUATION frames. c.wmu
// must be held: the encoder's state must follow the order on the wire.
func (c *conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, endStream bool) error {
	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	c.mu.Lock()
	max := int(c.peerMaxFrame)
	c.mu.Unlock()
	block := c.hbuf.Bytes()
	first := block[:min(len(block), max)]
	block = block[len(first):]
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 {
		chunk := block[:min(len(block), max)]
		block = block[len(chunk):]
		err = c.fr.WriteContinuation(id, len(block) == 0, chunk)
	}
	return err
}

// writeDataLocked writes p as DATA frames of at most maxFrame bytes,
// building the frame header itself so the payload is copied once, into
// bw. c.wmu must be held.
func (c *conn) writeDataLocked(id uint32, p []byte, maxFrame int, endStream bool) error {
	for {
		n := min(len(p), maxFrame)
		var flags byte
		if endStream && n == len(p) {
			flags = byte(http2.FlagDataEndStream)
		}
		c.hdr = [9]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(http2.FrameData), flags, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
		if _, err := c.bw.Write(c.hdr[:]); err != nil {
			return err
		}
		if _, err := c.bw.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}

// flushLocked writes queued control frames and flushes bw; a failure
// closes the connection. c.wmu must be held.
func (c *conn) flushLocked() error {
	err := c.writeCtrlLocked()
	if err == nil {
		if c.cfg.writeTimeout > 0 {
			c.nc.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout))
		}
		err = c.bw.Flush()
	}
	if err != nil {
		err = fmt.Errorf("write to hbone peer: %w", err)
		c.close(err)
	}
	return err
}

// --- lifetime ---

// close ends the connection and every stream on it.
func (c *conn) close(err error) {
	c.mu.Lock()
	c.closeLocked(err)
	c.mu.Unlock()
}

// closeLocked is close with c.mu held; closing the socket does not block.
func (c *conn) closeLocked(err error) {
	if !c.shutdownLocked(err) {
		return
	}
	c.nc.Close()
}

// shutdownLocked fails every stream and refuses new ones but leaves the
// socket open; it reports whether the connection was still open. c.mu
// must be held.
func (c *conn) shutdownLocked(err error) bool {
	if c.closed {
		return false
	}
	c.closed = true
	c.err = err
	close(c.done)
	for _, s := range c.streams {
		s.failLocked(err)
		s.removed = true
		if s.cancel != nil {
			s.cancel(err)
		}
	}
	clear(c.streams)
	if c.slotFree != nil {
		close(c.slotFree)
		c.slotFree = nil
	}
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
	return true
}

// Close closes the connection and waits for its reader.
func (c *conn) Close() error {
	c.close(errConnClosed)
	// After a protocol error the socket stays open for a while so the
	// peer can read our GOAWAY; an explicit Close does not wait for that.
	c.nc.Close()
	<-c.readerDone
	<-c.writerDone
	return nil
}

// state reports whether new streams may be opened and how many the peer
// allows at once.
func (c *conn) state() (usable bool, maxStreams int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goAwayRecv, int(c.peerMaxStreams)
}

// startPing arms the keep-alive: after pingInterval without a frame from
// the peer it pings, and closes the connection if no frame comes back
// within pingTimeout.
func (c *conn) startPing() {
	if c.cfg.pingInterval <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.pingTimer = time.AfterFunc(c.cfg.pingInterval, c.pingCheck)
	}
}

var pingData = [8]byte{'h', 'b', 'o', 'n', 'e', 'v', '2', 0}

func (c *conn) pingCheck() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	idle := now.Sub(time.Unix(0, c.lastRead.Load()))
	switch {
	case c.pingOut && idle < now.Sub(c.pingAt):
		// Something arrived since the ping: the peer is alive.
		c.pingOut = false
		c.pingTimer.Reset(c.cfg.pingInterval - idle)
	case c.pingOut:
		if c.cfg.pingTimeout > 0 && now.Sub(c.pingAt) >= c.cfg.pingTimeout {
			c.closeLocked(errPingTimeout)
			c.mu.Unlock()
			return
		}
		c.pingTimer.Reset(c.cfg.pingTimeout - now.Sub(c.pingAt))
	case idle >= c.cfg.pingInterval:
		c.pingOut = true
		c.pingAt = now
		c.queueLocked(ctrlFrame{kind: ctrlPing, data: pingData})
		wait := c.cfg.pingTimeout
		if wait <= 0 {
			wait = c.cfg.pingInterval
		}
		c.pingTimer.Reset(wait)
	default:
		c.pingTimer.Reset(c.cfg.pingInterval - idle)
	}
	c.mu.Unlock()
	c.kick()
}

// --- reading ---

// readLoop reads frames until the connection fails; onHeaders handles a
// server's new streams. It closes the connection before it returns.
func (c *conn) readLoop(onStream func(id uint32, f *http2.MetaHeadersFrame) error) {
	defer close(c.readerDone)
	err := c.readFrames(onStream)
	var pe protoError
	if errors.As(err, &pe) {
		c.goAway(pe, err)
		return
	}
	c.close(err)
}

// goAway sends GOAWAY for a protocol error, then keeps reading (and
// discarding) for a moment so the close does not reset the connection
// before the peer has read it.
func (c *conn) goAway(pe protoError, err error) {
	c.mu.Lock()
	last := c.lastPeerID
	ok := c.shutdownLocked(err)
	if ok {
		c.goAwaySent = true
		c.queueLocked(ctrlFrame{kind: ctrlGoAway, id: last, code: pe.code})
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	deadline := time.Now().Add(goAwayLinger)
	c.nc.SetWriteDeadline(deadline)
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.nc.SetReadDeadline(deadline)
	io.Copy(io.Discard, c.br)
	c.nc.Close()
}

func (c *conn) readFrames(onStream func(id uint32, f *http2.MetaHeadersFrame) error) error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			switch {
			case errors.As(err, &se):
				if err := c.streamFailed(se); err != nil {
					return err
				}
				continue
			case errors.Is(err, http2.ErrFrameTooLarge):
				return connError(http2.ErrCodeFrameSize, "frame too large")
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return connError(http2.ErrCode(ce), "%v", c.fr.ErrorDetail())
			}
			c.mu.Lock()
			if c.closed {
				err = c.err
			}
			c.mu.Unlock()
			if err == io.EOF {
				// For a stream, the connection's end is an abort, not
				// the end of its data.
				err = errPeerClosed
			}
			return fmt.Errorf("read from hbone peer: %w", err)
		}
		c.lastRead.Store(time.Now().UnixNano())
		if err := c.processFrame(f, onStream); err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if err := c.streamFailed(se); err != nil {
					return err
				}
				continue
			}
			return err
		}
	}
}

// streamFailed resets a stream after a stream error.
func (c *conn) streamFailed(se http2.StreamError) error {
	c.mu.Lock()
	if se.StreamID == 0 {
		c.mu.Unlock()
		return connError(se.Code, "stream error on stream 0")
	}
	if c.peerInitiated(se.StreamID) && se.StreamID > c.lastPeerID {
		// A new stream that failed still uses up its ID.
		c.lastPeerID = se.StreamID
	}
	if s := c.streams[se.StreamID]; s != nil {
		s.failLocked(fmt.Errorf("hbone stream protocol error: %v", se.Code))
		c.removeLocked(s)
	}
	c.queueLocked(ctrlFrame{kind: ctrlReset, id: se.StreamID, code: se.Code})
	c.mu.Unlock()
	c.kickFromReader()
	return nil
}

func (c *conn) peerInitiated(id uint32) bool { return (id%2 == 1) == c.server }

// idleLocked reports whether id names a stream that was never opened.
func (c *conn) idleLocked(id uint32) bool {
	if c.peerInitiated(id) {
		return id > c.lastPeerID
	}
	return id >= c.nextID
}

func (c *conn) processFrame(f http2.Frame, onStream func(id uint32, f *http2.MetaHeadersFrame) error) error {
	if _, ok := f.(*http2.SettingsFrame); !ok {
		c.mu.Lock()
		saw := c.sawSettings
		c.mu.Unlock()
		if !saw {
			return connError(http2.ErrCodeProtocol, "first frame is %v, not SETTINGS", f.Header().Type)
		}
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f, onStream)
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		c.mu.Lock()
		c.queueLocked(ctrlFrame{kind: ctrlPingAck, data: f.Data})
		c.mu.Unlock()
		c.kickFromReader()
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.GoAwayFrame:
		c.processGoAway(f)
	case *http2.PushPromiseFrame:
		return connError(http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled")
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return streamError(f.StreamID, http2.ErrCodeProtocol)
		}
	}
	return nil
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return connError(http2.ErrCodeProtocol, "invalid setting %v", s)
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > maxWindow {
					return connError(http2.ErrCodeFlowControl, "stream window overflow")
				}
				st.cond.Broadcast()
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
			c.signalSlotLocked()
		case http2.SettingHeaderTableSize:
			c.queueLocked(ctrlFrame{kind: ctrlTableSize, val: s.Val})
		case http2.SettingEnablePush:
			if !c.server && s.Val != 0 {
				return connError(http2.ErrCodeProtocol, "server enabled push")
			}
		}
		return nil
	})
	if err == nil {
		if !c.sawSettings && c.server {
			// The handshake is complete; from now on pings watch the peer.
			c.nc.SetReadDeadline(time.Time{})
		}
		c.sawSettings = true
		c.queueLocked(ctrlFrame{kind: ctrlSettingsAck})
	}
	c.mu.Unlock()
	c.kickFromReader()
	return err
}

func (c *conn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	flow := int64(f.Length)
	data := f.Data()
	c.mu.Lock()
	defer c.kickFromReader()
	defer c.mu.Unlock()
	if flow > c.recvWin {
		return connError(http2.ErrCodeFlowControl, "connection window exceeded")
	}
	c.recvWin -= flow
	s := c.streams[id]
	if s == nil || s.recvEnd {
		c.creditConnLocked(flow)
		if s == nil && c.idleLocked(id) {
			return connError(http2.ErrCodeProtocol, "DATA on idle stream %d", id)
		}
		return streamError(id, http2.ErrCodeStreamClosed)
	}
	if !c.server && !s.gotResp {
		c.creditConnLocked(flow)
		return streamError(id, http2.ErrCodeProtocol)
	}
	if flow > s.recvWin {
		c.creditConnLocked(flow)
		return streamError(id, http2.ErrCodeFlowControl)
	}
	s.recvWin -= flow
	if pad := flow - int64(len(data)); pad > 0 {
		c.creditConnLocked(pad)
		s.creditLocked(pad)
	}
	if len(data) > 0 {
		if s.localClosed {
			c.creditConnLocked(int64(len(data)))
		} else {
			if s.roff > 0 && len(s.buf)+len(data) > cap(s.buf) {
				// Move the unread bytes down rather than grow: the
				// buffer then stays within the stream window.
				n := copy(s.buf, s.buf[s.roff:])
				s.buf, s.roff = s.buf[:n], 0
			}
			if need := len(s.buf) + len(data); need > cap(s.buf) {
				nb := getBuf(need)[:len(s.buf)]
				copy(nb, s.buf)
				putBuf(s.buf)
				s.buf = nb
			}
			s.buf = append(s.buf, data...)
		}
	}
	if f.StreamEnded() {
		s.recvEnd = true
		c.maybeRemoveLocked(s)
	}
	s.cond.Broadcast()
	return nil
}

func (c *conn) processHeaders(f *http2.MetaHeadersFrame, onStream func(id uint32, f *http2.MetaHeadersFrame) error) error {
	id := f.StreamID
	c.mu.Lock()
	s := c.streams[id]
	if s == nil {
		idle := c.idleLocked(id)
		c.mu.Unlock()
		switch {
		case idle && c.server && id%2 == 1:
			return onStream(id, f)
		case idle:
			return connError(http2.ErrCodeProtocol, "HEADERS on idle stream %d", id)
		case c.server:
			return connError(http2.ErrCodeStreamClosed, "HEADERS on closed stream %d", id)
		}
		return nil // a stream this client already reset
	}
	defer c.kickFromReader()
	defer c.mu.Unlock()
	if s.recvEnd {
		return streamError(id, http2.ErrCodeStreamClosed)
	}
	if c.server || s.gotResp {
		// Trailers: they must end the stream and carry no pseudo-headers.
		if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			return streamError(id, http2.ErrCodeProtocol)
		}
		s.recvEnd = true
		c.maybeRemoveLocked(s)
		s.cond.Broadcast()
		return nil
	}
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code < 100 || code > 999 || len(f.PseudoFields()) != 1 {
		return streamError(id, http2.ErrCodeProtocol)
	}
	if code < 200 {
		if f.StreamEnded() {
			return streamError(id, http2.ErrCodeProtocol)
		}
		return nil // informational; the answer follows
	}
	s.gotResp = true
	s.status = code
	for _, hf := range f.RegularFields() {
		if hf.Name == ReasonHeader {
			s.reason = hf.Value
		}
	}
	if f.StreamEnded() {
		s.recvEnd = true
		c.maybeRemoveLocked(s)
	}
	s.finishRespLocked()
	s.cond.Broadcast()
	return nil
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWin += inc
		if c.sendWin > maxWindow {
			return connError(http2.ErrCodeFlowControl, "connection window overflow")
		}
		for _, s := range c.streams {
			if s.waitConnWin {
				s.waitConnWin = false
				s.cond.Broadcast()
			}
		}
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if c.idleLocked(f.StreamID) {
			return connError(http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream %d", f.StreamID)
		}
		return nil
	}
	s.sendWin += inc
	if s.sendWin > maxWindow {
		return streamError(f.StreamID, http2.ErrCodeFlowControl)
	}
	s.cond.Broadcast()
	return nil
}

func (c *conn) processReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.StreamID]
	if s == nil {
		if c.idleLocked(f.StreamID) {
			return connError(http2.ErrCodeProtocol, "RST_STREAM on idle stream %d", f.StreamID)
		}
		return nil
	}
	s.failLocked(resetError{code: f.ErrCode})
	c.removeLocked(s)
	return nil
}

func (c *conn) processGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goAwayRecv = true
	for id, s := range c.streams {
		if !c.peerInitiated(id) && id > f.LastStreamID {
			// The peer never saw it: safe to retry elsewhere.
			s.failLocked(errGoAway)
			c.removeLocked(s)
		}
	}
	c.signalSlotLocked()
}

// creditConnLocked returns n bytes of connection window to the peer once
// enough has accumulated. c.mu must be held; the caller kicks.
func (c *conn) creditConnLocked(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= creditBatch(int64(c.cfg.connWindow)) {
		c.queueLocked(ctrlFrame{kind: ctrlWindow, val: uint32(c.recvUnacked)})
		c.recvWin += c.recvUnacked
		c.recvUnacked = 0
	}
}

// creditBatch is how much consumed window is returned at once: half the
// window, at most maxCreditBatch.
func creditBatch(window int64) int64 { return min(window/2, maxCreditBatch) }

// removeLocked forgets a stream that is closed in both directions or
// reset, freeing its slot. c.mu must be held.
func (c *conn) removeLocked(s *stream) {
	if s.removed {
		return
	}
	s.removed = true
	delete(c.streams, s.id)
	c.signalSlotLocked()
	if s.cancel != nil {
		s.cancel(errStreamEnded)
	}
}

var errStreamEnded = errors.New("hbone stream ended")

func (c *conn) maybeRemoveLocked(s *stream) {
	if s.sentEnd && s.recvEnd {
		c.removeLocked(s)
	}
}

func (c *conn) signalSlotLocked() {
	if c.slotFree != nil {
		close(c.slotFree)
		c.slotFree = nil
	}
}

// --- streams ---

// stream is one HTTP/2 stream. Its fields other than c and id are
// guarded by c.mu; wlock serialises its Write and CloseWrite.
type stream struct {
	c     *conn
	id    uint32
	cond  sync.Cond // L is &c.mu; signalled on data, credit and failure
	wlock sync.Mutex

	buf         []byte // received, unread: buf[roff:]
	roff        int
	recvEnd     bool  // END_STREAM received
	recvWin     int64 // stream credit we granted
	unacked     int64 // consumed, not yet granted again
	sendWin     int64
	sentEnd     bool // END_STREAM sent (or queued with a refusal)
	wclosed     bool // CloseWrite called
	err         error
	localClosed bool
	removed     bool
	waitConnWin bool

	// Client: the answer to the CONNECT.
	respDone chan struct{}
	respOnce bool
	gotResp  bool
	status   int
	reason   string

	// Server: ends the handler's context.
	cancel context.CancelCauseFunc
}

func (c *conn) newStreamLocked(id uint32) *stream {
	s := &stream{
		c:       c,
		id:      id,
		recvWin: int64(c.cfg.streamWindow),
		sendWin: c.peerInitWin,
	}
	s.cond.L = &c.mu
	c.streams[id] = s
	return s
}

// failLocked records why the stream's operations fail from now on.
func (s *stream) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	s.finishRespLocked()
	s.cond.Broadcast()
}

func (s *stream) finishRespLocked() {
	if s.respDone != nil && !s.respOnce {
		s.respOnce = true
		close(s.respDone)
	}
}

// creditLocked returns n bytes of stream window once enough has
// accumulated. c.mu must be held; the caller kicks.
func (s *stream) creditLocked(n int64) {
	if s.recvEnd || s.removed {
		return // the peer sends nothing more on it
	}
	s.unacked += n
	if s.unacked >= creditBatch(int64(s.c.cfg.streamWindow)) {
		s.c.queueLocked(ctrlFrame{kind: ctrlWindow, id: s.id, val: uint32(s.unacked)})
		s.recvWin += s.unacked
		s.unacked = 0
	}
}

func (s *stream) read(p []byte) (int, error) {
	c := s.c
	c.mu.Lock()
	for {
		switch {
		case s.localClosed:
			c.mu.Unlock()
			return 0, net.ErrClosed
		case s.roff < len(s.buf):
			if len(p) == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			n := copy(p, s.buf[s.roff:])
			s.roff += n
			if s.roff == len(s.buf) {
				s.buf, s.roff = s.buf[:0], 0
				if cap(s.buf) > maxIdleBuffer {
					// A burst grew it; an idle stream should not keep
					// up to a window's worth of memory, so it goes back
					// to the pool for the next burst on any stream.
					putBuf(s.buf)
					s.buf = nil
				}
			}
			c.creditConnLocked(int64(n))
			s.creditLocked(int64(n))
			c.mu.Unlock()
			c.kick()
			return n, nil
		case s.recvEnd:
			c.mu.Unlock()
			return 0, io.EOF
		case s.err != nil:
			err := s.err
			c.mu.Unlock()
			return 0, err
		}
		s.cond.Wait()
	}
}

// writeErrLocked is why a write cannot proceed, if it cannot.
func (s *stream) writeErrLocked() error {
	switch {
	case s.localClosed:
		return net.ErrClosed
	case s.wclosed:
		return errWriteClosed
	case s.err != nil:
		return s.err
	case s.sentEnd:
		return errWriteClosed
	}
	return nil
}

// write sends p as DATA within the peer's windows, one flush per chunk of
// credit, so a Write that fits the window is one flush.
func (s *stream) write(p []byte) (int, error) {
	s.wlock.Lock()
	defer s.wlock.Unlock()
	c := s.c
	total := 0
	for len(p) > 0 {
		c.mu.Lock()
		for {
			if err := s.writeErrLocked(); err != nil {
				c.mu.Unlock()
				return total, err
			}
			if s.sendWin > 0 && c.sendWin > 0 {
				break
			}
			if c.sendWin <= 0 {
				s.waitConnWin = true
			}
			s.cond.Wait()
		}
		n := min(int64(len(p)), s.sendWin, c.sendWin)
		s.sendWin -= n
		c.sendWin -= n
		maxFrame := int(c.peerMaxFrame)
		c.mu.Unlock()

		c.wmu.Lock()
		c.mu.Lock()
		err := s.writeErrLocked()
		c.mu.Unlock()
		if err == nil {
			err = c.writeDataLocked(s.id, p[:n], maxFrame, false)
			if ferr := c.flushLocked(); err == nil {
				err = ferr
			}
		}
		c.unlockWrite()
		if err != nil {
			return total, err
		}
		total += int(n)
		p = p[n:]
	}
	return total, nil
}

// closeWrite sends END_STREAM after the data written so far.
func (s *stream) closeWrite() error {
	s.wlock.Lock()
	defer s.wlock.Unlock()
	c := s.c
	c.mu.Lock()
	if s.localClosed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	if s.wclosed {
		c.mu.Unlock()
		return nil
	}
	s.wclosed = true
	c.mu.Unlock()

	c.wmu.Lock()
	c.mu.Lock()
	send := s.err == nil && !s.sentEnd && !c.closed
	if send {
		// Marked before the frame goes out, so the stream's slot is free
		// by the time the peer can see the END_STREAM.
		s.sentEnd = true
		c.maybeRemoveLocked(s)
	}
	c.mu.Unlock()
	var err error
	if send {
		err = c.writeDataLocked(s.id, nil, 1, true)
		if ferr := c.flushLocked(); err == nil {
			err = ferr
		}
	}
	c.unlockWrite()
	return err
}

// close releases the stream, resetting it unless it already ended in both
// directions. It never blocks on the socket.
func (s *stream) close() {
	c := s.c
	c.mu.Lock()
	if s.localClosed {
		c.mu.Unlock()
		return
	}
	s.localClosed = true
	if unread := int64(len(s.buf) - s.roff); unread > 0 {
		c.creditConnLocked(unread)
	}
	putBuf(s.buf)
	s.buf, s.roff = nil, 0
	if !s.removed {
		s.failLocked(errLocalReset)
		if !c.closed {
			c.queueLocked(ctrlFrame{kind: ctrlReset, id: s.id, code: http2.ErrCodeCancel})
		}
		c.removeLocked(s)
	}
	s.finishRespLocked()
	s.cond.Broadcast()
	c.mu.Unlock()
	c.kick()
}

// Receive buffers come in power-of-two classes from minPooledBuffer up to
// 16 MiB (the largest window, rounded up), pooled so that bursts on many
// streams share memory instead of each stream keeping its high-water mark.
const (
	minPooledBuffer = 16 << 10
	bufClasses      = 11 // 16 KiB << 10 = 16 MiB
)

var bufPools [bufClasses]sync.Pool

func bufClass(n int) int {
	c, size := 0, minPooledBuffer
	for size < n && c < bufClasses-1 {
		c++
		size <<= 1
	}
	return c
}

// getBuf returns an empty buffer with room for n bytes.
func getBuf(n int) []byte {
	c := bufClass(n)
	size := minPooledBuffer << c
	if size < n {
		return make([]byte, 0, n) // beyond every class; not pooled
	}
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

// putBuf returns b, which must not be used afterwards, to its pool.
func putBuf(b []byte) {
	if cap(b) < minPooledBuffer {
		return
	}
	c := bufClass(cap(b))
	if minPooledBuffer<<c != cap(b) {
		return // not one of ours
	}
	b = b[:0]
	bufPools[c].Put(&b)
}
