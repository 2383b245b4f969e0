package state

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrNoServicePort is wrapped by Resolve's error for a connection to a
// Service VIP on a port the Service does not have: such a connection is
// refused, as kube-proxy would.
var ErrNoServicePort = errors.New("service has no such port")

// Resolution is where an outbound connection goes. It is computed from one
// Snapshot and shares its memory: it is read-only, safe to share between
// goroutines, and neither Candidates nor what the pointers point to may be
// modified.
type Resolution struct {
	// Service and Port are the Service VIP:port that was dialled; nil
	// when the destination is not a Service.
	Service *Service
	Port    *ServicePort
	// Candidates are the addresses the connection may go to: the ready
	// endpoints of Service, or the one destination. Empty when the
	// Service has no ready endpoint.
	Candidates []Target
}

// Target is one address an outbound connection may be sent to. It is a
// value; Workload points into a Snapshot and is read-only.
type Target struct {
	// Addr is the destination ip:port the application means to reach
	// (for HBONE, the CONNECT :authority).
	Addr netip.AddrPort
	// Workload is the workload at Addr; nil when it is not a known pod
	// (passthrough, or an endpoint outside the snapshot).
	Workload *Workload
	// HBONE is true when Workload is meshed: the connection is tunnelled
	// to HBONEAddr instead of dialled in plain TCP.
	HBONE bool
}

// HBONEAddr returns the address of the HBONE listener of t's workload: its
// IP at HBONEPort.
func (t Target) HBONEAddr() netip.AddrPort {
	return netip.AddrPortFrom(t.Addr.Addr(), HBONEPort)
}

// Resolve decides where an outbound connection to dst goes:
//   - a Service VIP:port: that Service and its ready endpoints, each at its
//     own port (Endpoint.Ports, else ServicePort.TargetPort, else the
//     service port), reached by HBONE when its workload is meshed;
//   - a Service VIP on another port: an error wrapping ErrNoServicePort;
//   - a workload IP: that workload at dst's port;
//   - anything else: dst itself in plain TCP (passthrough).
//
// IPv4-mapped IPv6 destinations resolve as their IPv4 address. Resolve does
// not allocate for a Service, and allocates one Target otherwise.
func (s *Snapshot) Resolve(dst netip.AddrPort) (Resolution, error) {
	if !dst.IsValid() {
		return Resolution{}, fmt.Errorf("resolve %v: invalid destination", dst)
	}
	x := s.index()
	ip := dst.Addr().Unmap()
	dst = netip.AddrPortFrom(ip, dst.Port())
	if r := x.svcPorts[dst]; r != nil {
		return *r, nil
	}
	if svc := x.vips[ip]; svc != nil {
		return Resolution{}, fmt.Errorf("resolve %v: %w: service %s has no port %d (it has %s)",
			dst, ErrNoServicePort, svc.label(), dst.Port(), portList(svc))
	}
	w := x.byIP[ip]
	return Resolution{Candidates: []Target{{Addr: dst, Workload: w, HBONE: isHBONE(w)}}}, nil
}

func portList(svc *Service) string {
	if len(svc.Ports) == 0 {
		return "no ports"
	}
	var b strings.Builder
	for i, p := range svc.Ports {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(int(p.Port)))
	}
	return b.String()
}
