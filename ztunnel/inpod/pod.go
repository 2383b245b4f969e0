package inpod

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
	"github.com/weftmesh/weft/internal/netns"
)

// Ports of the listeners the proxy opens in every pod netns.
const (
	OutboundPort = 15001
	InboundPort  = 15006
	HBONEPort    = 15008
)

// Listener names one of a pod's three listeners.
type Listener int

const (
	// Outbound (127.0.0.1:15001) receives the pod's redirected connect()s.
	Outbound Listener = iota
	// Inbound (0.0.0.0:15006) receives plaintext connections to the pod,
	// assigned by the tcx program; the local address is the original
	// destination.
	Inbound
	// HBONE (0.0.0.0:15008) receives mTLS tunnels from other proxies.
	HBONE
)

func (l Listener) String() string {
	switch l {
	case Outbound:
		return "outbound"
	case Inbound:
		return "inbound"
	case HBONE:
		return "hbone"
	}
	return fmt.Sprintf("listener(%d)", int(l))
}

func (l Listener) addr() string {
	switch l {
	case Outbound:
		return fmt.Sprintf("127.0.0.1:%d", OutboundPort)
	case Inbound:
		return fmt.Sprintf("0.0.0.0:%d", InboundPort)
	default:
		return fmt.Sprintf("0.0.0.0:%d", HBONEPort)
	}
}

var allListeners = []Listener{Outbound, Inbound, HBONE}

const dialTimeout = 5 * time.Second

// Pod is one served pod: its network namespace, listeners and the
// connections the proxy holds for it.
//
// Pod is safe for concurrent use.
type Pod struct {
	netns     *os.File // closed once the pod is closed and its last connection ends
	nsID      netns.ID
	cookie    uint64
	mark      uint32
	listeners []*net.TCPListener // by Listener; set before the pod is published
	ctx       context.Context    // ends when the pod is deleted (not when drained)
	cancel    context.CancelFunc

	// mu guards the fields below.
	mu          sync.Mutex
	w           inpodv1.Workload
	conns       map[io.Closer]struct{} // accepted and dialled, still open
	closed      bool                   // listeners closed (drained or deleted)
	killed      bool                   // deleted: no new connections at all
	netnsClosed bool
}

// UID returns the pod's metadata.uid.
func (p *Pod) UID() string { return p.Workload().UID }

// Workload returns the pod's metadata as the agent last sent it.
func (p *Pod) Workload() inpodv1.Workload {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w
}

// NetnsCookie returns the cookie of the pod's network namespace, the key of
// the eBPF maps.
func (p *Pod) NetnsCookie() uint64 { return p.cookie }

// Context ends when the pod is deleted or the proxy stops; a drained
// (unenrolled) pod's context lives on until its last connection ends.
func (p *Pod) Context() context.Context { return p.ctx }

// Dial connects to dst with a socket created inside the pod's netns and
// marked, so it leaves with the pod's own address and is not redirected
// again. The connection is tracked: deleting the pod closes it. The caller
// must end it with Release.
func (p *Pod) Dial(ctx context.Context, dst netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: dialTimeout, Control: markControl(p.mark, p.cookie)}
	d.SetMultipathTCP(false)
	p.mu.Lock()
	if p.netnsClosed || p.killed {
		p.mu.Unlock()
		return nil, fmt.Errorf("dial %s from pod %s: pod released", dst, p.w.UID)
	}
	// Hold a placeholder so the netns stays open while we are inside it.
	token := new(placeholder)
	p.conns[token] = struct{}{}
	p.mu.Unlock()
	defer p.Release(token)

	var c *net.TCPConn
	// An IP literal makes DialContext create and connect the socket on
	// this goroutine, which runs on the thread inside the pod netns;
	// markControl checks that it really is there.
	err := netns.Do(p.netns, func() error {
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
	if !p.Track(c) {
		c.Close()
		return nil, fmt.Errorf("dial %s from pod %s: pod removed", dst, p.UID())
	}
	return c, nil
}

type placeholder struct{}

func (*placeholder) Close() error { return nil }

// Track adds c to the pod's connections, which close when the pod is
// deleted; false (and c untouched) if the pod is deleted or fully released.
// A draining pod still tracks new streams of its open tunnels.
func (p *Pod) Track(c io.Closer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.killed || p.netnsClosed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// Release closes c and forgets it; the last connection of a closed pod
// closes the pod's netns descriptor.
func (p *Pod) Release(c io.Closer) {
	c.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.conns[c]; !ok {
		return
	}
	delete(p.conns, c)
	p.maybeCloseNetnsLocked()
}

// maybeCloseNetnsLocked drops the netns once nothing uses it. p.mu must be
// held.
func (p *Pod) maybeCloseNetnsLocked() {
	if p.closed && len(p.conns) == 0 && !p.netnsClosed {
		p.netnsClosed = true
		p.netns.Close()
		p.cancel()
	}
}

// Connections returns how many connections the pod holds.
func (p *Pod) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if _, ok := c.(*placeholder); !ok {
			n++
		}
	}
	return n
}

func (p *Pod) setWorkload(w inpodv1.Workload) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.w = w
}

// close closes the pod's listeners and, unless drain, its connections. A
// draining pod may be closed again without drain.
func (p *Pod) close(drain bool) {
	p.mu.Lock()
	first := !p.closed
	p.closed = true
	var conns []io.Closer
	if !drain {
		p.killed = true
		conns = slices.Collect(maps.Keys(p.conns))
	}
	p.maybeCloseNetnsLocked()
	p.mu.Unlock()
	if first {
		for _, l := range p.listeners {
			l.Close()
		}
	}
	if !drain {
		p.cancel()
	}
	for _, c := range conns {
		c.Close() // their owners Release them
	}
}

// idle reports whether the pod is closed and holds no connection.
func (p *Pod) idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed && len(p.conns) == 0
}

// openPod opens w's listeners in the netns open at ns (which the Pod owns
// from then on, also on error it is not closed here).
func openPod(parent context.Context, w inpodv1.Workload, ns *os.File, id netns.ID, mark uint32) (*Pod, error) {
	cookie, err := netns.Cookie(ns)
	if err != nil {
		return nil, err
	}
	if w.NetnsCookie != 0 && w.NetnsCookie != cookie {
		return nil, fmt.Errorf("netns cookie mismatch: workload says %d, the netns descriptor has %d", w.NetnsCookie, cookie)
	}
	ctx, cancel := context.WithCancel(parent)
	p := &Pod{w: w, netns: ns, nsID: id, cookie: cookie, mark: mark, ctx: ctx, cancel: cancel, conns: make(map[io.Closer]struct{})}
	lc := net.ListenConfig{Control: markControl(mark, cookie)}
	lc.SetMultipathTCP(false)
	err = netns.Do(ns, func() error {
		for _, l := range allListeners {
			ln, err := lc.Listen(ctx, "tcp4", l.addr())
			if err != nil {
				return fmt.Errorf("listen on %s (%s) in pod netns: %w", l.addr(), l, err)
			}
			p.listeners = append(p.listeners, ln.(*net.TCPListener))
		}
		return nil
	})
	if err != nil {
		for _, l := range p.listeners {
			l.Close()
		}
		cancel()
		return nil, err
	}
	return p, nil
}
