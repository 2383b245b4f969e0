package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	hbone "github.com/weftmesh/weft/internal/hbonev2"
	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/inpod"
	"github.com/weftmesh/weft/ztunnel/state"
	"github.com/weftmesh/weft/ztunnel/telemetry"
)

// serveOutbound carries one connection the pod's app opened (redirected to
// the outbound listener) to its original destination.
func (p *Proxy) serveOutbound(ctx context.Context, sp *servedPod, c *net.TCPConn) {
	peer := addrPort(c.RemoteAddr())
	w := sp.pod.Workload()
	snap := p.store.Current()
	src := telemetry.Peer{Workload: snap.WorkloadByUID(w.UID), Identity: sp.id, Addr: peer}
	info := telemetry.ConnInfo{Reporter: telemetry.ReporterSource, Source: src, Destination: telemetry.Peer{}}

	dst, err := p.cfg.OrigDst(sp.pod.NetnsCookie(), peer)
	if err != nil {
		p.metrics.Failed(info, kindErr("orig_dst", fmt.Errorf("look up original destination of %s: %w", peer, err)))
		reset(c)
		return
	}
	info.Destination.Addr = dst
	if isOwnListener(dst, w.IPs) {
		p.metrics.Failed(info, kindErr("loop", fmt.Errorf("original destination %s is a proxy listener", dst)))
		reset(c)
		return
	}
	res, err := snap.Resolve(dst)
	if err != nil {
		p.metrics.Failed(info, kindErr("resolve", err))
		reset(c)
		return
	}
	info.Service = res.Service
	if len(res.Candidates) == 0 {
		p.metrics.Failed(info, kindErr("no_endpoint", fmt.Errorf("service %s/%s has no ready endpoint for %s", res.Service.Namespace, res.Service.Name, dst)))
		reset(c)
		return
	}

	failed := make(map[netip.AddrPort]bool)
	var lastErr error
	for range maxEndpointTrials {
		t, ok := p.lb.Pick(res, func(t state.Target) bool { return failed[t.Addr] })
		if !ok {
			break
		}
		info.Destination = telemetry.Peer{Workload: t.Workload, Addr: t.Addr}
		up, err := p.connectUpstream(ctx, sp, snap, t, &info)
		if err != nil {
			var se *hbone.StatusError
			if errors.As(err, &se) {
				// The destination answered: a refusal is final.
				if se.Code == http.StatusForbidden {
					p.metrics.DeniedByPeer(info, se.Reason, kindErr("denied_by_destination", err))
				} else {
					p.metrics.Failed(info, kindErr("denied_by_destination", err))
				}
				reset(c)
				return
			}
			failed[t.Addr] = true
			lastErr = err
			continue
		}
		conn := p.metrics.Open(info)
		_, _, cerr := pipe(c, up, conn.Received, conn.Sent)
		conn.Close(telemetry.FlagNone, cutByShutdown(ctx, cerr))
		return
	}
	p.metrics.Failed(info, kindErr("connect", fmt.Errorf("connect to %s: %w", dst, lastErr)))
	reset(c)
}

// connectUpstream opens the upstream half for target t: an HBONE stream to a
// meshed workload, else a plain TCP connection from the pod's netns.
func (p *Proxy) connectUpstream(ctx context.Context, sp *servedPod, snap *state.Snapshot, t state.Target, info *telemetry.ConnInfo) (conn, error) {
	if !t.HBONE {
		info.MutualTLS = false
		up, err := sp.pod.Dial(ctx, t.Addr)
		if err != nil {
			return nil, err
		}
		return &podTCP{TCPConn: up, pod: sp.pod}, nil
	}
	dstID := snap.Identity(t.Workload)
	info.MutualTLS = true
	info.Destination.Identity = dstID
	info.Destination.Addr = t.HBONEAddr()
	info.HBONEAddr = t.Addr
	key := hbone.Key{
		SourcePod:      sp.pod.UID(),
		SourceIdentity: sp.id.String(),
		DestIdentity:   dstID.String(),
		Dest:           t.HBONEAddr(),
	}
	return p.pool.Connect(ctx, key, t.Addr, nil)
}

// dialTunnel is the pool's dialer: a TCP connection from the source pod's
// netns to the destination's HBONE port, then mutual TLS that verifies the
// server is the workload the key names.
func (p *Proxy) dialTunnel(ctx context.Context, key hbone.Key) (net.Conn, error) {
	p.mu.Lock()
	sp := p.pods[key.SourcePod]
	p.mu.Unlock()
	if sp == nil {
		return nil, fmt.Errorf("dial tunnel to %s: source pod %s is not served", key.Dest, key.SourcePod)
	}
	want, err := spiffe.ParseID(key.DestIdentity)
	if err != nil {
		return nil, fmt.Errorf("dial tunnel to %s: %w", key.Dest, err)
	}
	raw, err := sp.pod.Dial(ctx, key.Dest)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, p.certs.ClientConfig(sp.id, want))
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		sp.pod.Release(raw)
		return nil, fmt.Errorf("tls handshake with %s (%s): %w", key.Dest, want, err)
	}
	return &podTLS{Conn: tc, raw: raw, pod: sp.pod}, nil
}

// podTLS is a tunnel connection tracked by its source pod.
type podTLS struct {
	*tls.Conn
	raw *net.TCPConn
	pod *inpod.Pod
}

func (c *podTLS) Close() error {
	err := c.Conn.Close()
	c.pod.Release(c.raw)
	return err
}

// podTCP is a plain upstream connection tracked by its pod.
type podTCP struct {
	*net.TCPConn
	pod *inpod.Pod
}

func (c *podTCP) Close() error {
	c.pod.Release(c.TCPConn)
	return nil
}
