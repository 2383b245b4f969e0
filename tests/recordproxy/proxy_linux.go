package recordproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
)

const (
	// DefaultMark is the SO_MARK of every socket the proxy creates in a pod
	// netns when Config.Mark is 0: 0x5746, "WF".
	DefaultMark = 0x5746

	// OutboundPort, InboundPort and HBONEPort are the proxy's listeners in
	// each pod netns (ARCHITECTURE.md §3.1).
	OutboundPort = 15001
	InboundPort  = 15006
	HBONEPort    = 15008

	// HBONEGreeting is what a connection to the HBONE listener receives
	// before it is closed.
	HBONEGreeting = "weft-recordproxy hbone\n"

	dialTimeout = 5 * time.Second
	minBackoff  = 20 * time.Millisecond
	maxBackoff  = time.Second
)

// listeners are the listeners opened in every pod netns.
var listeners = []struct {
	kind, addr string
}{
	{ListenerOutbound, fmt.Sprintf("127.0.0.1:%d", OutboundPort)},
	{ListenerInbound, fmt.Sprintf("0.0.0.0:%d", InboundPort)},
	{ListenerHBONE, fmt.Sprintf("0.0.0.0:%d", HBONEPort)},
}

// OrigDstLookup returns the original destination of an outbound connection
// redirected to the outbound listener, from the pod's netns cookie and the
// connection's source address (the accepted socket's peer), as the eBPF
// programs record it.
type OrigDstLookup func(netnsCookie uint64, peer netip.AddrPort) (netip.AddrPort, error)

// Config configures a Proxy.
type Config struct {
	// Socket is the agent's handoff socket. Required.
	Socket string
	// RecordFile receives one JSON Record line per accepted connection
	// (appended; created if missing). Required.
	RecordFile string
	// Mark is the SO_MARK of every socket created in a pod netns; 0 means
	// DefaultMark.
	Mark uint32
	// OrigDst finds outbound original destinations; nil records them as ""
	// and closes the connection.
	OrigDst OrigDstLookup
}

// Proxy is the recording stand-in node proxy. Create it with New and start
// it with Run.
//
// Proxy is safe for concurrent use.
type Proxy struct {
	cfg  Config
	mark uint32
	log  *slog.Logger

	// mu guards the fields below.
	mu sync.Mutex
	// pods are the served pods by UID. Only the agent session goroutine
	// adds and removes entries.
	pods map[string]*pod
	// draining are removed pods whose connections may still be open.
	draining map[*pod]bool
	g        *errgroup.Group // of the running Run, nil outside
	rec      *recorder
}

// New returns a Proxy for cfg.
func New(cfg Config, log *slog.Logger) *Proxy {
	mark := cfg.Mark
	if mark == 0 {
		mark = DefaultMark
	}
	return &Proxy{
		cfg:      cfg,
		mark:     mark,
		log:      log.With("component", "recordproxy"),
		pods:     make(map[string]*pod),
		draining: make(map[*pod]bool),
	}
}

// Run connects to the agent (retrying until the socket accepts, and again
// after the connection ends), serves the pods it hands over, and returns
// once ctx ends, having closed every listener and connection. It returns an
// error only if the configuration or the record file is unusable. Call Run
// once.
func (p *Proxy) Run(ctx context.Context) error {
	if p.cfg.Socket == "" || p.cfg.RecordFile == "" {
		return errors.New("run record proxy: socket and record file are required")
	}
	rec, err := openRecorder(p.cfg.RecordFile)
	if err != nil {
		return fmt.Errorf("run record proxy: %w", err)
	}
	defer rec.close()
	g, gctx := errgroup.WithContext(ctx)
	p.mu.Lock()
	p.g, p.rec = g, rec
	p.mu.Unlock()
	g.Go(func() error {
		defer p.closeAll()
		p.connectLoop(gctx)
		return nil
	})
	err = g.Wait()
	p.mu.Lock()
	p.g = nil
	p.mu.Unlock()
	return err
}

// Pods returns the workloads the proxy serves, by UID.
func (p *Proxy) Pods() []inpodv1.Workload {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := make([]inpodv1.Workload, 0, len(p.pods))
	for _, pd := range p.pods {
		ws = append(ws, pd.workload())
	}
	slices.SortFunc(ws, func(a, b inpodv1.Workload) int { return strings.Compare(a.UID, b.UID) })
	return ws
}

// spawn runs f under Run's errgroup.
func (p *Proxy) spawn(f func()) {
	p.mu.Lock()
	g := p.g
	p.mu.Unlock()
	g.Go(func() error {
		f()
		return nil
	})
}

func (p *Proxy) connectLoop(ctx context.Context) {
	backoff := minBackoff
	for {
		c, err := inpodv1.Dial(ctx, p.cfg.Socket)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Debug("agent socket not ready", "error", err.Error())
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		err = p.session(ctx, c)
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("agent connection ended, reconnecting", "error", err.Error())
	}
}

// session speaks the protocol on one agent connection until it ends.
func (p *Proxy) session(ctx context.Context, c *inpodv1.Conn) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	m, fd, err := c.Recv()
	if err != nil {
		return fmt.Errorf("receive hello: %w", err)
	}
	hello, ok := m.(inpodv1.Hello)
	if !ok {
		if fd != nil {
			fd.Close()
		}
		c.Send(inpodv1.Ack{Error: "expected hello, got " + m.Type()}, nil)
		return fmt.Errorf("receive hello: got %s", m.Type())
	}
	if hello.Version != inpodv1.Version {
		c.Send(inpodv1.Ack{Error: fmt.Sprintf("unsupported protocol version %d, this proxy speaks %d", hello.Version, inpodv1.Version)}, nil)
		return fmt.Errorf("receive hello: unsupported protocol version %d", hello.Version)
	}
	if err := c.Send(inpodv1.Ack{}, nil); err != nil {
		return err
	}
	p.log.Info("connected to agent", "socket", p.cfg.Socket)

	snapshot := make(map[string]bool) // non-nil until SnapshotSent
	for {
		m, fd, err := c.Recv()
		if err != nil {
			if errors.Is(err, inpodv1.ErrMalformed) || errors.Is(err, inpodv1.ErrTooLarge) {
				c.Send(inpodv1.Ack{Error: err.Error()}, nil)
			}
			return err
		}
		var opErr error
		switch m := m.(type) {
		case inpodv1.AddWorkload:
			if snapshot != nil {
				snapshot[m.Workload.UID] = true
			}
			opErr = p.add(ctx, m.Workload, fd)
		case inpodv1.SnapshotSent:
			if snapshot == nil {
				opErr = errors.New("snapshotSent after the snapshot")
				break
			}
			p.releaseMissing(snapshot)
			snapshot = nil
		case inpodv1.RemoveWorkload:
			p.remove(m.UID, m.Drain)
		default:
			c.Send(inpodv1.Ack{Error: "unexpected " + m.Type()}, nil)
			return fmt.Errorf("receive message: unexpected %s", m.Type())
		}
		ack := inpodv1.Ack{}
		if opErr != nil {
			p.log.Warn("refused "+m.Type(), "error", opErr.Error())
			ack.Error = opErr.Error()
		}
		if err := c.Send(ack, nil); err != nil {
			return err
		}
	}
}

// releaseMissing drains the pods served from an earlier agent connection
// that the new snapshot did not name. Drain, because whether such a pod
// was deleted or only unenrolled is unknown, and unenrolling never cuts
// connections.
func (p *Proxy) releaseMissing(snapshot map[string]bool) {
	p.mu.Lock()
	var gone []string
	for uid := range p.pods {
		if !snapshot[uid] {
			gone = append(gone, uid)
		}
	}
	p.mu.Unlock()
	for _, uid := range gone {
		p.log.Info("pod not in snapshot, released", "uid", uid)
		p.remove(uid, true)
	}
}

// add serves w in the netns open at netns, which add owns.
func (p *Proxy) add(ctx context.Context, w inpodv1.Workload, netns *os.File) error {
	id, err := netnsID(netns)
	if err != nil {
		netns.Close()
		return fmt.Errorf("add %s: %w", w.UID, err)
	}
	p.mu.Lock()
	old := p.pods[w.UID]
	p.mu.Unlock()
	if old != nil && old.nsID == id {
		netns.Close()
		old.setWorkload(w)
		return nil
	}
	pd, err := p.openPod(ctx, w, netns, id)
	if err != nil {
		netns.Close()
		return fmt.Errorf("add %s/%s (%s): %w", w.Namespace, w.Name, w.UID, err)
	}
	p.mu.Lock()
	p.pods[w.UID] = pd
	p.mu.Unlock()
	for _, l := range pd.listeners {
		p.spawn(func() { p.acceptLoop(ctx, pd, l.kind, l.ln) })
	}
	if old != nil {
		// A new sandbox for the same pod: the old netns is gone.
		old.close(false)
	}
	p.log.Info("pod added", "uid", w.UID, "pod", w.Namespace+"/"+w.Name, "netnsCookie", pd.cookie, "replaced", old != nil)
	return nil
}

func (p *Proxy) openPod(ctx context.Context, w inpodv1.Workload, netns *os.File, id fileID) (*pod, error) {
	cookie, err := netnsCookie(netns)
	if err != nil {
		return nil, err
	}
	if w.NetnsCookie != 0 && w.NetnsCookie != cookie {
		return nil, fmt.Errorf("netns cookie mismatch: workload says %d, the netns descriptor has %d", w.NetnsCookie, cookie)
	}
	pd := &pod{w: w, netns: netns, nsID: id, cookie: cookie, conns: make(map[*net.TCPConn]struct{})}
	lc := net.ListenConfig{Control: markControl(p.mark, cookie)}
	lc.SetMultipathTCP(false)
	err = inNetns(netns, func() error {
		for _, l := range listeners {
			ln, err := lc.Listen(ctx, "tcp4", l.addr)
			if err != nil {
				return fmt.Errorf("listen on %s in pod netns: %w", l.addr, err)
			}
			pd.listeners = append(pd.listeners, podListener{kind: l.kind, ln: ln.(*net.TCPListener)})
		}
		return nil
	})
	if err != nil {
		for _, l := range pd.listeners {
			l.ln.Close()
		}
		return nil, err
	}
	return pd, nil
}

// remove releases the pod uid, if served.
func (p *Proxy) remove(uid string, drain bool) {
	p.mu.Lock()
	pd := p.pods[uid]
	delete(p.pods, uid)
	for d := range p.draining {
		if d.idle() {
			delete(p.draining, d)
		}
	}
	if pd != nil && drain {
		p.draining[pd] = true
	}
	p.mu.Unlock()
	if pd != nil {
		pd.close(drain)
		p.log.Info("pod removed", "uid", uid, "drain", drain)
	}
}

// closeAll closes every pod, draining ones included, and its connections.
func (p *Proxy) closeAll() {
	p.mu.Lock()
	pods := slices.Collect(maps.Values(p.pods))
	pods = slices.AppendSeq(pods, maps.Keys(p.draining))
	p.pods = make(map[string]*pod)
	p.draining = make(map[*pod]bool)
	p.mu.Unlock()
	for _, pd := range pods {
		pd.close(false)
	}
}

func (p *Proxy) acceptLoop(ctx context.Context, pd *pod, kind string, ln *net.TCPListener) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Error("accept failed, listener stopped", "uid", pd.w.UID, "listener", kind, "error", err.Error())
			}
			return
		}
		if !pd.track(c) {
			c.Close()
			continue
		}
		p.spawn(func() { p.handle(ctx, pd, kind, c) })
	}
}

// handle records and serves one accepted connection.
func (p *Proxy) handle(ctx context.Context, pd *pod, kind string, c *net.TCPConn) {
	defer pd.untrackClose(c)
	w := pd.workload()
	local, peer := addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
	rec := Record{
		Time:      time.Now().UTC(),
		Listener:  kind,
		PodUID:    w.UID,
		PodName:   w.Name,
		Namespace: w.Namespace,
		Peer:      peer.String(),
		Local:     local.String(),
	}
	if mark, err := socketMark(c); err == nil {
		rec.Mark = mark
	}

	var dst netip.AddrPort
	switch kind {
	case ListenerHBONE:
		rec.OrigDst = local.String()
		p.record(rec)
		c.Write([]byte(HBONEGreeting))
		return
	case ListenerInbound:
		dst = local
	case ListenerOutbound:
		if p.cfg.OrigDst == nil {
			p.record(rec)
			return
		}
		var err error
		if dst, err = p.cfg.OrigDst(pd.cookie, peer); err != nil {
			rec.Error = fmt.Sprintf("look up original destination of %s: %v", peer, err)
			p.record(rec)
			return
		}
	}
	rec.OrigDst = dst.String()
	if isProxyAddr(dst, local, w.IPs) {
		rec.Error = fmt.Sprintf("original destination %s is a proxy listener: not proxied", dst)
		p.record(rec)
		return
	}
	up, err := p.dialFromPod(ctx, pd, dst)
	if err != nil {
		rec.Error = err.Error()
		p.record(rec)
		return
	}
	defer pd.untrackClose(up)
	rec.Upstream = up.LocalAddr().String()
	if mark, err := socketMark(up); err == nil {
		rec.UpstreamMark = mark
	}
	p.record(rec)
	p.pipe(c, up)
}

func (p *Proxy) record(rec Record) {
	p.mu.Lock()
	r := p.rec
	p.mu.Unlock()
	if err := r.write(rec); err != nil {
		p.log.Error("record connection", "error", err.Error())
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// isProxyAddr reports whether dst is one of the proxy's own listeners in
// the pod netns (proxying there would loop).
func isProxyAddr(dst, local netip.AddrPort, podIPs []netip.Addr) bool {
	switch dst.Port() {
	case OutboundPort, InboundPort, HBONEPort:
	default:
		return false
	}
	a := dst.Addr().Unmap()
	return dst == local || a.IsLoopback() || a.IsUnspecified() || slices.Contains(podIPs, a)
}

// dialFromPod connects to dst with a socket created in the pod's netns and
// marked, so the eBPF programs do not redirect it again.
func (p *Proxy) dialFromPod(ctx context.Context, pd *pod, dst netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: dialTimeout, Control: markControl(p.mark, pd.cookie)}
	d.SetMultipathTCP(false)
	var c *net.TCPConn
	// An IP literal makes DialContext create the socket on the calling
	// goroutine, locked on the pod thread; markControl checks it is there.
	err := inNetns(pd.netns, func() error {
		nc, err := d.DialContext(ctx, "tcp", dst.String())
		if err != nil {
			return err
		}
		c = nc.(*net.TCPConn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from pod netns: %w", dst, err)
	}
	if !pd.track(c) {
		c.Close()
		return nil, fmt.Errorf("dial %s from pod netns: pod removed", dst)
	}
	return c, nil
}

// pipe copies bytes both ways between a and b until both directions end.
func (p *Proxy) pipe(a, b *net.TCPConn) {
	done := make(chan struct{})
	p.spawn(func() {
		defer close(done)
		copyHalf(b, a)
	})
	copyHalf(a, b)
	<-done
}

// copyHalf copies src to dst with a plain read/write loop: io.Copy between
// TCP conns would splice(2), which sk_msg redirection cannot see. At EOF it
// half-closes dst; on an error it closes both, ending the other half too.
func copyHalf(dst, src *net.TCPConn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				dst.Close()
				return
			}
		}
		if errors.Is(err, io.EOF) {
			dst.CloseWrite()
			return
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}

// pod is one served pod netns.
type pod struct {
	netns     *os.File // closed once the pod is closed and its last conn ends
	nsID      fileID
	cookie    uint64
	listeners []podListener // set before the pod is published

	// mu guards the fields below.
	mu     sync.Mutex
	w      inpodv1.Workload
	conns  map[*net.TCPConn]struct{} // accepted and dialed, still open
	closed bool
}

type podListener struct {
	kind string
	ln   *net.TCPListener
}

func (pd *pod) workload() inpodv1.Workload {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	return pd.w
}

func (pd *pod) setWorkload(w inpodv1.Workload) {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	pd.w = w
}

// track adds c to the pod's connections; false if the pod is closed.
func (pd *pod) track(c *net.TCPConn) bool {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	if pd.closed {
		return false
	}
	pd.conns[c] = struct{}{}
	return true
}

// untrackClose closes c and forgets it; the last connection of a closed
// pod closes the netns.
func (pd *pod) untrackClose(c *net.TCPConn) {
	c.Close()
	pd.mu.Lock()
	defer pd.mu.Unlock()
	if _, ok := pd.conns[c]; !ok {
		return
	}
	delete(pd.conns, c)
	if pd.closed && len(pd.conns) == 0 {
		pd.netns.Close()
	}
}

// close closes the pod's listeners and, unless drain, its connections. A
// draining pod may be closed again without drain.
func (pd *pod) close(drain bool) {
	pd.mu.Lock()
	first := !pd.closed
	pd.closed = true
	var conns []*net.TCPConn
	if !drain {
		conns = slices.Collect(maps.Keys(pd.conns))
	}
	if first && len(pd.conns) == 0 {
		pd.netns.Close()
	}
	pd.mu.Unlock()
	if first {
		for _, l := range pd.listeners {
			l.ln.Close()
		}
	}
	for _, c := range conns {
		c.Close() // their handlers untrack them
	}
}

// idle reports whether the pod is closed and has no connections left.
func (pd *pod) idle() bool {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	return pd.closed && len(pd.conns) == 0
}
