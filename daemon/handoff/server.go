package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
)

// defaultAckTimeout bounds each wait for a proxy's Ack (and each send). A
// proxy that misses it is disconnected; it gets the full snapshot when it
// reconnects. Istio's ztunnelserver uses the same bound.
const defaultAckTimeout = 5 * time.Second

var (
	// ErrNoProxy is returned (wrapped) by Add and Remove when no proxy is
	// connected. Nothing is lost: a proxy that connects later gets every
	// enrolled pod in its snapshot.
	ErrNoProxy = errors.New("no proxy connected")
	// ErrProxyLost is wrapped by errors of Add and Remove when the proxy
	// connection failed (disconnect, protocol violation, ack timeout) before
	// the proxy acknowledged. Whether the proxy applied the message is
	// unknown; a retry, or the snapshot of the next connection, settles it.
	ErrProxyLost = errors.New("proxy connection lost")
)

// AckError is a proxy's refusal of a message: its Ack carried an error.
// The proxy's state is as before the message.
type AckError struct {
	// Reason is the proxy's Ack error text.
	Reason string
}

func (e *AckError) Error() string { return "proxy refused: " + e.Reason }

// Enrolled is a pod to hand to the proxy.
type Enrolled struct {
	Workload inpodv1.Workload
	// Netns is the pod's network namespace (an open /proc/<pid>/ns/net or
	// /run/netns/<name>). The caller owns it; the Server sends duplicates.
	Netns *os.File
}

// Stats are the Server's counters since New.
type Stats struct {
	// Connections is the number of proxy connections now open.
	Connections int
	// Accepted counts proxy connections accepted.
	Accepted uint64
	// Synced counts connections whose snapshot was fully acknowledged.
	Synced uint64
	// Adds and Removes count AddWorkload and RemoveWorkload messages the
	// proxies acknowledged as applied, snapshot Adds included; a Remove
	// sent to two connections counts twice.
	Adds, Removes uint64
	// Refused counts Acks carrying an error.
	Refused uint64
	// Failed counts connections that ended on an error other than the
	// proxy closing its end: protocol violations, I/O errors, ack timeouts.
	Failed uint64
}

// Server is the agent end of the in-pod handoff protocol. Create it with
// New and start it with Run.
//
// Server is safe for concurrent use.
type Server struct {
	path       string
	log        *slog.Logger
	snapshot   func() []Enrolled
	ackTimeout time.Duration

	// mu guards the fields below.
	mu sync.Mutex
	// conns are the open proxy connections in accept order; the last one
	// is the active one.
	conns []*proxyConn
	// changed is closed and replaced whenever conns or the synced state of
	// one of them changes.
	changed chan struct{}
	nextID  uint64
	stats   Stats
}

// New returns a Server that will listen on socketPath. snapshot returns the
// pods enrolled at the moment of the call; it is called once per proxy
// connection, from that connection's sender goroutine, after the connection
// became the active one, and may be nil (no pods).
//
// For a new proxy never to miss a pod, the caller changes the set snapshot
// reads before it calls Add or Remove for that change. The files snapshot
// returns must stay open until a Remove for that pod has returned: the
// Server duplicates them right after snapshot returns.
func New(socketPath string, log *slog.Logger, snapshot func() []Enrolled) *Server {
	return &Server{
		path:       socketPath,
		log:        log.With("component", "handoff", "socket", socketPath),
		snapshot:   snapshot,
		ackTimeout: defaultAckTimeout,
		changed:    make(chan struct{}),
	}
}

// Run listens on the socket and serves proxy connections until ctx ends;
// it then closes every connection, removes the socket (unless another
// process replaced it meanwhile) and returns nil. The socket's directory is
// created (mode 0750) if missing, a stale socket at the path is replaced,
// and the socket has mode 0600 from the moment it is reachable. Run returns an error
// if it cannot listen or accept. Call Run once.
func (s *Server) Run(ctx context.Context) error {
	ln, own, err := s.listen()
	if err != nil {
		return err
	}
	s.log.Info("listening for proxies")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-gctx.Done()
		s.unlinkIfOurs(own)
		ln.Close()
		return nil
	})
	g.Go(func() error {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("accept proxy connection on %s: %w", s.path, err)
			}
			pc := s.register(c)
			g.Go(func() error {
				pc.readLoop()
				return nil
			})
			g.Go(func() error {
				s.serveConn(gctx, pc)
				return nil
			})
		}
	})
	return g.Wait()
}

// listen creates the listening socket and returns it with the socket
// file's identity.
func (s *Server) listen() (*net.UnixListener, os.FileInfo, error) {
	dir := filepath.Dir(s.path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, nil, fmt.Errorf("create socket dir %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o750); err != nil {
			return nil, nil, fmt.Errorf("chmod socket dir %s: %w", dir, err)
		}
	}
	fi, err := os.Lstat(s.path)
	stale := err == nil
	switch {
	case err == nil && fi.Mode().Type() != fs.ModeSocket:
		return nil, nil, fmt.Errorf("listen on %s: path exists and is not a socket (%s)", s.path, fi.Mode().Type())
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("stat socket %s: %w", s.path, err)
	}
	// Bind a temporary name, restrict it, then rename it into place: the
	// socket is never reachable with a wider mode, and a stale socket is
	// replaced atomically.
	tmp := s.path + ".new"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("remove %s: %w", tmp, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: tmp, Net: "unixpacket"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", s.path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("chmod socket %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fail(fmt.Errorf("move socket into place at %s: %w", s.path, err))
	}
	if stale {
		s.log.Info("replaced stale socket")
	}
	own, err := os.Lstat(s.path)
	if err != nil {
		return fail(fmt.Errorf("stat socket %s: %w", s.path, err))
	}
	return ln, own, nil
}

// unlinkIfOurs removes the socket unless another process has replaced it
// meanwhile (a new agent during an upgrade).
func (s *Server) unlinkIfOurs(own os.FileInfo) {
	if fi, err := os.Lstat(s.path); err == nil && os.SameFile(fi, own) {
		os.Remove(s.path)
	}
}

// Add hands e to the active (newest) proxy and returns once the proxy has
// acknowledged it, or ctx ends. Errors wrap ErrNoProxy (nobody to tell; the
// next proxy's snapshot will), ErrProxyLost (retry), an *AckError (the proxy
// refused), or ctx's error. Add duplicates e.Netns and never closes it.
func (s *Server) Add(ctx context.Context, e Enrolled) error {
	msg := inpodv1.AddWorkload{Workload: e.Workload}
	if _, err := inpodv1.Encode(msg); err != nil {
		return fmt.Errorf("add workload %q: %w", e.Workload.UID, err)
	}
	if e.Netns == nil {
		return fmt.Errorf("add workload %s: no netns file", e.Workload.UID)
	}
	pc := s.active()
	if pc == nil {
		return fmt.Errorf("add workload %s: %w", e.Workload.UID, ErrNoProxy)
	}
	fd, err := dupFile(e.Netns)
	if err != nil {
		return fmt.Errorf("add workload %s: duplicate netns: %w", e.Workload.UID, err)
	}
	if err := pc.do(ctx, &request{ctx: ctx, msg: msg, fd: fd}); err != nil {
		return fmt.Errorf("add workload %s: %w", e.Workload.UID, err)
	}
	return nil
}

// Remove tells every connected proxy to release the pod uid (drain: let its
// established connections finish) and returns once all of them answered or
// ctx ends. The result is the active proxy's answer; failures of older
// connections are logged. Errors wrap ErrNoProxy, ErrProxyLost, an
// *AckError, or ctx's error.
func (s *Server) Remove(ctx context.Context, uid string, drain bool) error {
	msg := inpodv1.RemoveWorkload{UID: uid, Drain: drain}
	if _, err := inpodv1.Encode(msg); err != nil {
		return fmt.Errorf("remove workload %q: %w", uid, err)
	}
	s.mu.Lock()
	conns := append([]*proxyConn(nil), s.conns...)
	s.mu.Unlock()
	if len(conns) == 0 {
		return fmt.Errorf("remove workload %s: %w", uid, ErrNoProxy)
	}
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, pc := range conns {
		wg.Go(func() {
			errs[i] = pc.do(ctx, &request{ctx: ctx, msg: msg})
		})
	}
	wg.Wait()
	for i, err := range errs[:len(errs)-1] {
		if err != nil && !errors.Is(err, ErrProxyLost) && ctx.Err() == nil {
			conns[i].log.Warn("older proxy failed to remove workload", "uid", uid, "error", err.Error())
		}
	}
	if err := errs[len(errs)-1]; err != nil {
		return fmt.Errorf("remove workload %s: %w", uid, err)
	}
	return nil
}

// Connected reports whether a proxy is connected and has acknowledged its
// snapshot.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connectedLocked()
}

// connectedLocked is Connected; s.mu must be held.
func (s *Server) connectedLocked() bool {
	for _, pc := range s.conns {
		if pc.synced {
			return true
		}
	}
	return false
}

// WaitConnected blocks until Connected is true or ctx ends, and returns
// ctx's error in the latter case.
func (s *Server) WaitConnected(ctx context.Context) error {
	for {
		s.mu.Lock()
		ok, changed := s.connectedLocked(), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for proxy: %w", context.Cause(ctx))
		}
	}
}

// Stats returns a snapshot of the Server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Connections = len(s.conns)
	return st
}

func (s *Server) active() *proxyConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) == 0 {
		return nil
	}
	return s.conns[len(s.conns)-1]
}

// register makes c the active connection.
func (s *Server) register(c *net.UnixConn) *proxyConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	pc := &proxyConn{
		c:    inpodv1.NewConn(c),
		log:  s.log.With("proxy", s.nextID),
		reqs: make(chan *request),
		acks: make(chan inpodv1.Ack, 1),
		gone: make(chan struct{}),
	}
	s.conns = append(s.conns, pc)
	s.stats.Accepted++
	s.notifyLocked()
	pc.log.Info("proxy connected", "connections", len(s.conns))
	return pc
}

func (s *Server) unregister(pc *proxyConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.conns {
		if c == pc {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			break
		}
	}
	if !errors.Is(pc.err, io.EOF) && !errors.Is(pc.err, context.Canceled) {
		s.stats.Failed++
	}
	s.notifyLocked()
}

// notifyLocked wakes WaitConnected callers; s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
}

// serveConn is pc's sender goroutine: Hello and snapshot, then requests,
// one at a time, each with its Ack.
func (s *Server) serveConn(ctx context.Context, pc *proxyConn) {
	defer s.unregister(pc)
	stop := context.AfterFunc(ctx, func() { pc.fail(context.Cause(ctx)) })
	defer stop()

	if err := s.handshake(pc); err != nil {
		pc.fail(err)
		if !errors.Is(err, context.Canceled) {
			pc.log.Warn("proxy handshake failed", "error", err.Error())
		}
		return
	}
	for {
		select {
		case <-pc.gone:
			pc.logEnd()
			return
		case r := <-pc.reqs:
			r.done <- s.process(pc, r)
		}
	}
}

// handshake sends Hello, the snapshot and SnapshotSent.
func (s *Server) handshake(pc *proxyConn) error {
	if err := pc.exchange(inpodv1.Hello{Version: inpodv1.Version}, nil, s.ackTimeout); err != nil {
		s.countAckErr(err)
		return fmt.Errorf("send hello: %w", err)
	}
	var pods []Enrolled
	if s.snapshot != nil {
		pods = s.snapshot()
	}
	// Duplicate every netns first, so the caller may close its files
	// while the snapshot is on its way.
	fds := make([]*os.File, len(pods))
	for i, e := range pods {
		if e.Netns == nil {
			pc.log.Error("snapshot pod without netns file, skipped", "uid", e.Workload.UID)
			continue
		}
		fd, err := dupFile(e.Netns)
		if err != nil {
			pc.log.Error("duplicate snapshot netns, pod skipped", "uid", e.Workload.UID, "error", err.Error())
			continue
		}
		fds[i] = fd
	}
	defer func() {
		for _, fd := range fds {
			if fd != nil {
				fd.Close()
			}
		}
	}()
	for i, e := range pods {
		if fds[i] == nil {
			continue
		}
		err := pc.exchange(inpodv1.AddWorkload{Workload: e.Workload}, fds[i], s.ackTimeout)
		fds[i].Close()
		fds[i] = nil
		var refused *AckError
		switch {
		case errors.As(err, &refused):
			s.count(func(st *Stats) { st.Refused++ })
			pc.log.Warn("proxy refused snapshot pod", "uid", e.Workload.UID, "error", refused.Reason)
		case err != nil:
			return fmt.Errorf("send snapshot pod %s: %w", e.Workload.UID, err)
		default:
			s.count(func(st *Stats) { st.Adds++ })
		}
	}
	if err := pc.exchange(inpodv1.SnapshotSent{}, nil, s.ackTimeout); err != nil {
		s.countAckErr(err)
		return fmt.Errorf("send snapshot end: %w", err)
	}
	s.mu.Lock()
	pc.synced = true
	s.stats.Synced++
	s.notifyLocked()
	s.mu.Unlock()
	pc.log.Info("proxy synced", "pods", len(pods))
	return nil
}

func (s *Server) countAckErr(err error) {
	var refused *AckError
	if errors.As(err, &refused) {
		s.count(func(st *Stats) { st.Refused++ })
	}
}

// process sends one request and waits for its Ack.
func (s *Server) process(pc *proxyConn, r *request) error {
	defer r.closeFD()
	if err := r.ctx.Err(); err != nil {
		// The caller gave up while the request was queued.
		return context.Cause(r.ctx)
	}
	err := pc.exchange(r.msg, r.fd, s.ackTimeout)
	var refused *AckError
	switch {
	case errors.As(err, &refused):
		s.count(func(st *Stats) { st.Refused++ })
	case err != nil:
	case r.msg.Type() == inpodv1.TypeAddWorkload:
		s.count(func(st *Stats) { st.Adds++ })
	default:
		s.count(func(st *Stats) { st.Removes++ })
	}
	return err
}

// request is one Add or Remove waiting for the sender goroutine.
type request struct {
	ctx  context.Context
	msg  inpodv1.Message
	fd   *os.File   // a duplicate owned by the request, or nil
	done chan error // buffered; receives the result once
}

func (r *request) closeFD() {
	if r.fd != nil {
		r.fd.Close()
		r.fd = nil
	}
}

// proxyConn is one proxy connection.
type proxyConn struct {
	c    *inpodv1.Conn
	log  *slog.Logger
	reqs chan *request    // unbuffered: taken by the sender goroutine
	acks chan inpodv1.Ack // from the reader; holds at most one
	gone chan struct{}    // closed by fail
	// awaiting is set by the sender before each send and cleared by the
	// reader when the Ack arrives; an Ack without it is a violation.
	awaiting atomic.Bool

	failOnce sync.Once
	err      error // why the connection ended; written before gone closes

	synced bool // guarded by Server.mu
}

// do queues r for the sender goroutine and waits for its result.
func (pc *proxyConn) do(ctx context.Context, r *request) error {
	r.done = make(chan error, 1)
	select {
	case pc.reqs <- r:
	case <-pc.gone:
		r.closeFD()
		return pc.lostErr()
	case <-ctx.Done():
		r.closeFD()
		return context.Cause(ctx)
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The sender still waits for the Ack and drops the result.
		return context.Cause(ctx)
	}
}

// exchange sends m (with fd) and waits for its Ack.
func (pc *proxyConn) exchange(m inpodv1.Message, fd *os.File, timeout time.Duration) error {
	select {
	case <-pc.gone:
		return pc.lostErr()
	default:
	}
	pc.awaiting.Store(true)
	pc.c.SetWriteDeadline(time.Now().Add(timeout))
	if err := pc.c.Send(m, fd); err != nil {
		pc.fail(err)
		return pc.lostErr()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ack := <-pc.acks:
		return ackErr(ack)
	case <-pc.gone:
		// An Ack that arrived just before the end still counts (a proxy
		// refusing Hello answers, then closes).
		select {
		case ack := <-pc.acks:
			return ackErr(ack)
		default:
		}
		return pc.lostErr()
	case <-t.C:
		pc.fail(fmt.Errorf("wait for ack of %s: no answer within %v", m.Type(), timeout))
		return pc.lostErr()
	}
}

func ackErr(ack inpodv1.Ack) error {
	if ack.Error != "" {
		return &AckError{Reason: ack.Error}
	}
	return nil
}

// readLoop is pc's reader goroutine: it passes Acks to the sender and fails
// the connection on anything else.
func (pc *proxyConn) readLoop() {
	for {
		m, fd, err := pc.c.Recv()
		if err != nil {
			pc.fail(err)
			return
		}
		if fd != nil {
			fd.Close()
		}
		ack, ok := m.(inpodv1.Ack)
		if !ok {
			pc.fail(fmt.Errorf("receive from proxy: %w: got %s, proxies send only acks", inpodv1.ErrMalformed, m.Type()))
			return
		}
		if !pc.awaiting.CompareAndSwap(true, false) {
			pc.fail(fmt.Errorf("receive from proxy: %w: ack with no message outstanding", inpodv1.ErrMalformed))
			return
		}
		pc.acks <- ack
	}
}

// fail ends the connection with err (the first call wins).
func (pc *proxyConn) fail(err error) {
	pc.failOnce.Do(func() {
		pc.err = err
		close(pc.gone)
		pc.c.Close()
	})
}

func (pc *proxyConn) lostErr() error {
	<-pc.gone
	return fmt.Errorf("%w: %w", ErrProxyLost, pc.err)
}

func (pc *proxyConn) logEnd() {
	<-pc.gone
	switch {
	case errors.Is(pc.err, io.EOF):
		pc.log.Info("proxy disconnected")
	case errors.Is(pc.err, context.Canceled):
		pc.log.Info("proxy connection closed: shutting down")
	default:
		pc.log.Warn("proxy connection failed", "error", pc.err.Error())
	}
}

// dupFile returns a close-on-exec duplicate of f.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		nfd   uintptr
		errno syscall.Errno
	)
	if err := rc.Control(func(fd uintptr) {
		nfd, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if errno != 0 {
		return nil, fmt.Errorf("fcntl F_DUPFD_CLOEXEC: %w", errno)
	}
	return os.NewFile(nfd, f.Name()), nil
}
