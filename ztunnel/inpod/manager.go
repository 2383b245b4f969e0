package inpod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
	"github.com/weftmesh/weft/internal/netns"
)

// DefaultMark is the SO_MARK of every socket the proxy creates in a pod
// netns: the mark the eBPF programs skip (bpf/redirect.SocketMark).
const DefaultMark = 0x539

const (
	minBackoff = 20 * time.Millisecond
	maxBackoff = time.Second
)

// Handler serves the pods a Manager receives.
type Handler interface {
	// Added is called for a new pod after its listeners are open and
	// before the agent gets the pod's acknowledgement; the listeners accept
	// only after it returns nil. An error refuses the pod (the agent
	// retries). Typically it obtains the pod's certificate.
	Added(ctx context.Context, p *Pod) error
	// Removed is called once for every pod Added accepted, when it is
	// released (drain: unenrolled; !drain: deleted) or the proxy stops.
	Removed(p *Pod, drain bool)
	// Serve handles one connection accepted on the pod's listener l. It
	// owns c, which is tracked by the pod: it must end it with p.Release.
	Serve(ctx context.Context, p *Pod, l Listener, c *net.TCPConn)
}

// Config configures a Manager.
type Config struct {
	// Socket is the agent's handoff socket. Required.
	Socket string
	// Mark is the SO_MARK of every socket created in a pod netns; 0 means
	// DefaultMark.
	Mark uint32
}

// Manager keeps the proxy connected to the agent and serves the pods the
// agent hands over. Create it with New and start it with Run.
//
// Manager is safe for concurrent use.
type Manager struct {
	cfg     Config
	handler Handler
	log     *slog.Logger

	// mu guards the fields below.
	mu sync.Mutex
	// pods are the served pods by UID. Only the agent session goroutine
	// adds and removes entries.
	pods map[string]*Pod
	// draining are released pods whose connections may still be open.
	draining map[*Pod]bool
	g        *errgroup.Group // of the running Run; nil outside
	synced   bool            // a snapshot was fully applied on the current connection
}

// New returns a Manager for cfg that hands connections to h.
func New(cfg Config, h Handler, log *slog.Logger) *Manager {
	if cfg.Mark == 0 {
		cfg.Mark = DefaultMark
	}
	return &Manager{
		cfg:      cfg,
		handler:  h,
		log:      log.With("component", "inpod"),
		pods:     make(map[string]*Pod),
		draining: make(map[*Pod]bool),
	}
}

// Run connects to the agent (retrying until the socket accepts, and again
// after a connection ends), serves the pods it hands over, and returns once
// ctx ends, having closed every listener and connection. Call Run once.
func (m *Manager) Run(ctx context.Context) error {
	if m.cfg.Socket == "" {
		return errors.New("run in-pod manager: no agent socket configured")
	}
	g, gctx := errgroup.WithContext(ctx)
	m.mu.Lock()
	m.g = g
	m.mu.Unlock()
	g.Go(func() error {
		defer m.closeAll()
		m.connectLoop(gctx)
		return nil
	})
	err := g.Wait()
	m.mu.Lock()
	m.g = nil
	m.mu.Unlock()
	return err
}

// Synced reports whether the proxy is connected to the agent and has applied
// its snapshot.
func (m *Manager) Synced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.synced
}

// Pods returns the served pods' workloads, sorted by UID.
func (m *Manager) Pods() []inpodv1.Workload {
	m.mu.Lock()
	defer m.mu.Unlock()
	ws := make([]inpodv1.Workload, 0, len(m.pods))
	for _, p := range m.pods {
		ws = append(ws, p.Workload())
	}
	slices.SortFunc(ws, func(a, b inpodv1.Workload) int { return strings.Compare(a.UID, b.UID) })
	return ws
}

// spawn runs f under Run's errgroup.
func (m *Manager) spawn(f func()) {
	m.mu.Lock()
	g := m.g
	m.mu.Unlock()
	g.Go(func() error {
		f()
		return nil
	})
}

func (m *Manager) connectLoop(ctx context.Context) {
	backoff := minBackoff
	for {
		c, err := inpodv1.Dial(ctx, m.cfg.Socket)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Debug("agent socket not ready", "socket", m.cfg.Socket, "error", err.Error())
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
		err = m.session(ctx, c)
		m.mu.Lock()
		m.synced = false
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("agent connection ended, reconnecting", "error", err.Error())
	}
}

// session speaks the protocol on one agent connection until it ends.
func (m *Manager) session(ctx context.Context, c *inpodv1.Conn) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	msg, fd, err := c.Recv()
	if err != nil {
		return fmt.Errorf("receive hello: %w", err)
	}
	hello, ok := msg.(inpodv1.Hello)
	if !ok {
		if fd != nil {
			fd.Close()
		}
		c.Send(inpodv1.Ack{Error: "expected hello, got " + msg.Type()}, nil)
		return fmt.Errorf("receive hello: got %s", msg.Type())
	}
	if hello.Version != inpodv1.Version {
		c.Send(inpodv1.Ack{Error: fmt.Sprintf("unsupported protocol version %d, this proxy speaks %d", hello.Version, inpodv1.Version)}, nil)
		return fmt.Errorf("receive hello: unsupported protocol version %d", hello.Version)
	}
	if err := c.Send(inpodv1.Ack{}, nil); err != nil {
		return err
	}
	m.log.Info("connected to agent", "socket", m.cfg.Socket)

	snapshot := make(map[string]bool) // non-nil until SnapshotSent
	for {
		msg, fd, err := c.Recv()
		if err != nil {
			if errors.Is(err, inpodv1.ErrMalformed) || errors.Is(err, inpodv1.ErrTooLarge) {
				c.Send(inpodv1.Ack{Error: err.Error()}, nil)
			}
			return err
		}
		var opErr error
		switch msg := msg.(type) {
		case inpodv1.AddWorkload:
			if snapshot != nil {
				snapshot[msg.Workload.UID] = true
			}
			opErr = m.add(ctx, msg.Workload, fd)
		case inpodv1.SnapshotSent:
			if snapshot == nil {
				opErr = errors.New("snapshotSent after the snapshot")
				break
			}
			m.releaseMissing(snapshot)
			snapshot = nil
			m.mu.Lock()
			m.synced = true
			m.mu.Unlock()
		case inpodv1.RemoveWorkload:
			m.remove(msg.UID, msg.Drain)
		default:
			c.Send(inpodv1.Ack{Error: "unexpected " + msg.Type()}, nil)
			return fmt.Errorf("receive message: unexpected %s", msg.Type())
		}
		ack := inpodv1.Ack{}
		if opErr != nil {
			m.log.Warn("refused "+msg.Type(), "error", opErr.Error())
			ack.Error = opErr.Error()
		}
		if err := c.Send(ack, nil); err != nil {
			return err
		}
	}
}

// releaseMissing drains the pods served from an earlier agent connection
// that the new snapshot did not name: whether such a pod was deleted or
// only unenrolled is unknown, and unenrolling never cuts connections.
func (m *Manager) releaseMissing(snapshot map[string]bool) {
	m.mu.Lock()
	var gone []string
	for uid := range m.pods {
		if !snapshot[uid] {
			gone = append(gone, uid)
		}
	}
	m.mu.Unlock()
	for _, uid := range gone {
		m.log.Info("pod not in snapshot, released", "uid", uid)
		m.remove(uid, true)
	}
}

// add serves w in the netns open at ns, which add owns.
func (m *Manager) add(ctx context.Context, w inpodv1.Workload, ns *os.File) error {
	id, err := netns.Identify(ns)
	if err != nil {
		ns.Close()
		return fmt.Errorf("add pod %s: %w", w.UID, err)
	}
	m.mu.Lock()
	old := m.pods[w.UID]
	m.mu.Unlock()
	if old != nil && old.nsID == id {
		ns.Close()
		old.setWorkload(w)
		return nil
	}
	p, err := openPod(ctx, w, ns, id, m.cfg.Mark)
	if err != nil {
		ns.Close()
		return fmt.Errorf("add pod %s/%s (%s): %w", w.Namespace, w.Name, w.UID, err)
	}
	if err := m.handler.Added(ctx, p); err != nil {
		p.close(false)
		return fmt.Errorf("add pod %s/%s (%s): %w", w.Namespace, w.Name, w.UID, err)
	}
	m.mu.Lock()
	m.pods[w.UID] = p
	m.mu.Unlock()
	for i, ln := range p.listeners {
		m.spawn(func() { m.acceptLoop(p, Listener(i), ln) })
	}
	if old != nil {
		// A new sandbox for the same pod: the old netns is gone.
		old.close(false)
		m.handler.Removed(old, false)
	}
	m.log.Info("pod added", "uid", w.UID, "pod", w.Namespace+"/"+w.Name, "netnsCookie", p.cookie, "replaced", old != nil)
	return nil
}

// remove releases the pod uid, if served.
func (m *Manager) remove(uid string, drain bool) {
	m.mu.Lock()
	p := m.pods[uid]
	delete(m.pods, uid)
	for d := range m.draining {
		if d.idle() {
			delete(m.draining, d)
		}
	}
	if p != nil && drain {
		m.draining[p] = true
	}
	if !drain {
		// A deleted pod may still be draining from an earlier unenroll.
		for d := range m.draining {
			if d.UID() == uid {
				delete(m.draining, d)
				d.close(false)
			}
		}
	}
	m.mu.Unlock()
	if p != nil {
		p.close(drain)
		m.handler.Removed(p, drain)
		m.log.Info("pod removed", "uid", uid, "drain", drain)
	}
}

// closeAll closes every pod, draining ones included, and its connections.
func (m *Manager) closeAll() {
	m.mu.Lock()
	pods := slices.Collect(maps.Values(m.pods))
	draining := slices.Collect(maps.Keys(m.draining))
	m.pods = make(map[string]*Pod)
	m.draining = make(map[*Pod]bool)
	m.mu.Unlock()
	for _, p := range pods {
		p.close(false)
		m.handler.Removed(p, false)
	}
	for _, p := range draining {
		p.close(false)
	}
}

func (m *Manager) acceptLoop(p *Pod, l Listener, ln *net.TCPListener) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.log.Error("accept failed, listener stopped", "uid", p.UID(), "listener", l.String(), "error", err.Error())
			}
			return
		}
		if !p.Track(c) {
			c.Close()
			continue
		}
		m.spawn(func() { m.handler.Serve(p.ctx, p, l, c) })
	}
}
