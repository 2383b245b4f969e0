package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	hbone "github.com/weftmesh/weft/internal/hbonev2"
	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/identity"
	"github.com/weftmesh/weft/ztunnel/inpod"
	"github.com/weftmesh/weft/ztunnel/state"
	"github.com/weftmesh/weft/ztunnel/telemetry"
)

const (
	// certTimeout bounds obtaining a new pod's certificate; it stays below
	// the agent's 5 s acknowledgement timeout so a slow CA refuses the pod
	// (the agent retries) instead of costing the agent connection.
	certTimeout       = 4 * time.Second
	handshakeTimeout  = 5 * time.Second
	maxEndpointTrials = 3
)

// ErrShutdown is the cause the proxy's owner cancels Serve's context with
// (context.WithCancelCause) when the proxy stops: the connections cut then
// are recorded as reset by the shutdown (ARCHITECTURE.md §7), not as clean
// ends. Only this cause counts: contexts also end for a deleted pod
// (context.Canceled) and, for a tunnel stream, when the stream itself ends.
var ErrShutdown = errors.New(telemetry.ShutdownReason)

// cutByShutdown returns err, or ErrShutdown (of kind "shutdown") if ctx
// ended because the proxy is stopping: closing the pod's connections then
// makes them end without an error of their own.
func cutByShutdown(ctx context.Context, err error) error {
	if ctx.Err() == nil || !errors.Is(context.Cause(ctx), ErrShutdown) {
		return err
	}
	return kindErr("shutdown", ErrShutdown)
}

// OrigDstLookup returns the original destination of a connection redirected
// to a pod's outbound listener, from the pod's netns cookie and the
// connection's source address, as the eBPF programs recorded it.
type OrigDstLookup func(netnsCookie uint64, peer netip.AddrPort) (netip.AddrPort, error)

// Config configures a Proxy.
type Config struct {
	// OrigDst recovers outbound original destinations. Required.
	OrigDst OrigDstLookup
	// Pool tunes the HBONE connection pool.
	Pool hbone.PoolOptions
	// Server tunes the HBONE server.
	Server hbone.ServerOptions
}

// Proxy handles the connections of the pods it serves; it implements
// inpod.Handler. Create it with New.
//
// Proxy is safe for concurrent use.
type Proxy struct {
	cfg     Config
	store   *state.Store
	certs   *identity.Manager
	metrics *telemetry.Metrics
	log     *slog.Logger
	pool    *hbone.Pool
	lb      state.Balancer
	guard   *guard

	// mu guards the fields below.
	mu   sync.Mutex
	pods map[string]*servedPod // by pod UID
}

// servedPod is what the proxy keeps per served pod.
type servedPod struct {
	pod       *inpod.Pod
	id        spiffe.ID
	serverTLS *tls.Config
}

// New returns a Proxy over the given state, certificates and metrics.
func New(cfg Config, store *state.Store, certs *identity.Manager, metrics *telemetry.Metrics, log *slog.Logger) (*Proxy, error) {
	if cfg.OrigDst == nil {
		return nil, errors.New("new proxy: no original-destination lookup")
	}
	p := &Proxy{
		cfg:     cfg,
		store:   store,
		certs:   certs,
		metrics: metrics,
		log:     log.With("component", "proxy"),
		pods:    make(map[string]*servedPod),
	}
	p.pool = hbone.NewPool(p.dialTunnel, cfg.Pool)
	p.guard = newGuard(p.log)
	return p, nil
}

// Run re-authorizes open inbound connections on every policy change until
// ctx ends, then closes the HBONE pool.
func (p *Proxy) Run(ctx context.Context) error {
	cancel := p.store.Subscribe(func(_, snap *state.Snapshot) {
		p.guard.recheck(snap)
	})
	<-ctx.Done()
	cancel()
	return p.pool.Close()
}

// Added obtains the pod's certificate; inpod acknowledges the pod only
// after that, so the pod's first connection is already authenticated.
func (p *Proxy) Added(ctx context.Context, pod *inpod.Pod) error {
	w := pod.Workload()
	id, err := spiffe.NewID(trustDomain(p.store.Current()), w.Namespace, w.ServiceAccount)
	if err != nil {
		return fmt.Errorf("identity of pod %s/%s: %w", w.Namespace, w.Name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, certTimeout)
	defer cancel()
	if err := p.certs.Acquire(cctx, id); err != nil {
		return fmt.Errorf("certificate for %s: %w", id, err)
	}
	sp := &servedPod{pod: pod, id: id, serverTLS: p.certs.ServerConfig(id)}
	p.mu.Lock()
	old := p.pods[w.UID]
	p.pods[w.UID] = sp
	p.mu.Unlock()
	if old != nil {
		p.certs.Release(old.id)
	}
	return nil
}

// Removed releases the pod's certificate; a deleted pod's pooled tunnels
// are closed at once (inpod already closed its sockets).
func (p *Proxy) Removed(pod *inpod.Pod, drain bool) {
	uid := pod.UID()
	p.mu.Lock()
	sp := p.pods[uid]
	if sp != nil && sp.pod == pod {
		delete(p.pods, uid)
	} else {
		sp = nil
	}
	p.mu.Unlock()
	if sp != nil {
		p.certs.Release(sp.id)
	}
	if !drain {
		p.pool.Evict(func(k hbone.Key) bool { return k.SourcePod == uid })
	}
}

func (p *Proxy) servedPod(pod *inpod.Pod) (*servedPod, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sp, ok := p.pods[pod.UID()]
	if ok && sp.pod != pod {
		return nil, false
	}
	return sp, ok
}

// Serve implements inpod.Handler.
func (p *Proxy) Serve(ctx context.Context, pod *inpod.Pod, l inpod.Listener, c *net.TCPConn) {
	defer pod.Release(c)
	sp, ok := p.servedPod(pod)
	if !ok {
		reset(c)
		return
	}
	switch l {
	case inpod.Outbound:
		p.serveOutbound(ctx, sp, c)
	case inpod.Inbound:
		p.serveInbound(ctx, sp, c)
	case inpod.HBONE:
		p.serveHBONE(ctx, sp, c)
	}
}

// reset closes c with a TCP RST, so the client sees "connection reset"
// rather than a clean end of stream.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// isOwnListener reports whether dst is one of the proxy's listeners in the
// pod netns: proxying there would loop.
func isOwnListener(dst netip.AddrPort, podIPs []netip.Addr) bool {
	switch dst.Port() {
	case inpod.OutboundPort, inpod.InboundPort, inpod.HBONEPort:
	default:
		return false
	}
	a := dst.Addr().Unmap()
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	for _, ip := range podIPs {
		if ip == a {
			return true
		}
	}
	return false
}

func trustDomain(s *state.Snapshot) string {
	if s.TrustDomain == "" {
		return spiffe.DefaultTrustDomain
	}
	return s.TrustDomain
}

// kindError is a proxy failure with its metric kind: one of a small fixed
// set of label values.
type kindError struct {
	kind string
	err  error
}

func kindErr(kind string, err error) error { return &kindError{kind: kind, err: err} }

func (e *kindError) Error() string     { return e.err.Error() }
func (e *kindError) Unwrap() error     { return e.err }
func (e *kindError) ErrorKind() string { return e.kind }
