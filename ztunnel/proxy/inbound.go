package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"

	hbone "github.com/weftmesh/weft/internal/hbonev2"
	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/identity"
	"github.com/weftmesh/weft/ztunnel/inpod"
	"github.com/weftmesh/weft/ztunnel/state"
	"github.com/weftmesh/weft/ztunnel/telemetry"
)

// serveInbound handles a plaintext connection to the pod, assigned to the
// inbound listener by the tcx program: the local address is the original
// destination and the peer has no identity.
func (p *Proxy) serveInbound(ctx context.Context, sp *servedPod, c *net.TCPConn) {
	dst := addrPort(c.LocalAddr())
	peer := addrPort(c.RemoteAddr())
	snap := p.store.Current()
	w := sp.pod.Workload()
	info := telemetry.ConnInfo{
		Reporter:    telemetry.ReporterDestination,
		Source:      telemetry.Peer{Workload: snap.WorkloadByIP(peer.Addr()), Addr: peer},
		Destination: telemetry.Peer{Workload: snap.WorkloadByUID(w.UID), Identity: sp.id, Addr: dst},
	}
	if isOwnListener(dst, w.IPs) {
		p.metrics.Failed(info, kindErr("loop", fmt.Errorf("inbound destination %s is a proxy listener", dst)))
		reset(c)
		return
	}
	d := snap.Authorize(spiffe.ID{}, info.Destination.Workload, dst.Port())
	if !d.Allowed {
		p.metrics.Denied(info, deniedBy(d), d.Reason)
		reset(c)
		return
	}
	up, err := sp.pod.Dial(ctx, dst)
	if err != nil {
		p.metrics.Failed(info, kindErr("connect", err))
		reset(c)
		return
	}
	upc := &podTCP{TCPConn: up, pod: sp.pod}
	defer upc.Close()
	g := p.guard.add(w.UID, dst.Port(), info, func() { reset(c); up.Close() })
	defer p.guard.remove(g)
	conn := p.metrics.Open(info)
	_, _, cerr := pipe(c, upc, conn.Received, conn.Sent)
	conn.Close(g.ended(cutByShutdown(ctx, cerr)))
}

// serveHBONE terminates mutual TLS from another proxy and serves the CONNECT
// streams on it: each is authorized for the peer's identity and, if
// allowed, joined to a connection to the app inside the pod's netns.
func (p *Proxy) serveHBONE(ctx context.Context, sp *servedPod, c *net.TCPConn) {
	peer := addrPort(c.RemoteAddr())
	tc := tls.Server(c, sp.serverTLS)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	snap := p.store.Current()
	w := sp.pod.Workload()
	base := telemetry.ConnInfo{
		Reporter:    telemetry.ReporterDestination,
		Source:      telemetry.Peer{Addr: peer},
		Destination: telemetry.Peer{Workload: snap.WorkloadByUID(w.UID), Identity: sp.id},
		MutualTLS:   true,
	}
	if err != nil {
		p.metrics.Failed(base, kindErr("tls_handshake", fmt.Errorf("tls handshake with %s: %w", peer, err)))
		reset(c)
		return
	}
	defer tc.Close()
	peerID, err := identity.PeerID(tc.ConnectionState())
	if err != nil {
		p.metrics.Failed(base, kindErr("peer_identity", err))
		return
	}
	base.Source.Identity = peerID
	hbone.ServeConn(ctx, tc, p.cfg.Server, func(ctx context.Context, s *hbone.Stream) {
		p.serveStream(ctx, sp, base, s)
	})
}

func (p *Proxy) serveStream(ctx context.Context, sp *servedPod, base telemetry.ConnInfo, s *hbone.Stream) {
	snap := p.store.Current()
	w := sp.pod.Workload()
	info := base
	info.HBONEAddr = s.Target
	info.Destination.Addr = netip.AddrPortFrom(s.Target.Addr(), inpod.HBONEPort)
	info.Destination.Workload = snap.WorkloadByUID(w.UID)
	// The tunnel leaves the source pod's netns, so its address is the
	// source pod's; trust it only if its workload has the peer's identity.
	if sw := snap.WorkloadByIP(base.Source.Addr.Addr()); sw != nil && snap.Identity(sw) == base.Source.Identity {
		info.Source.Workload = sw
	}
	if !slices.Contains(w.IPs, s.Target.Addr().Unmap()) || isOwnListener(s.Target, w.IPs) {
		p.metrics.Failed(info, kindErr("bad_target", fmt.Errorf("tunnel target %s is not an app port of pod %s/%s", s.Target, w.Namespace, w.Name)))
		s.Reject(http.StatusBadRequest, fmt.Sprintf("target %s is not served here", s.Target))
		return
	}
	d := snap.Authorize(base.Source.Identity, info.Destination.Workload, s.Target.Port())
	if !d.Allowed {
		p.metrics.Denied(info, deniedBy(d), d.Reason)
		s.Reject(http.StatusForbidden, d.Reason)
		return
	}
	up, err := sp.pod.Dial(ctx, s.Target)
	if err != nil {
		p.metrics.Failed(info, kindErr("connect", err))
		s.Reject(http.StatusServiceUnavailable, "connect to app: "+err.Error())
		return
	}
	upc := &podTCP{TCPConn: up, pod: sp.pod}
	defer upc.Close()
	down, err := s.Accept()
	if err != nil {
		p.metrics.Failed(info, kindErr("accept_stream", err))
		return
	}
	defer down.Close()
	g := p.guard.add(w.UID, s.Target.Port(), info, func() { down.Close(); up.Close() })
	defer p.guard.remove(g)
	conn := p.metrics.Open(info)
	_, _, cerr := pipe(down, upc, conn.Received, conn.Sent)
	conn.Close(g.ended(cutByShutdown(ctx, cerr)))
}

// deniedBy names what denied a connection for the denials metric: the
// policy, or the mode when no policy selects the destination (a label
// value from a small set, never the reason text).
func deniedBy(d state.Decision) string {
	if d.Policy != "" {
		return d.Policy
	}
	return "strict-mode"
}
