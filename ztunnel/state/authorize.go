package state

import (
	"strconv"

	"github.com/weftmesh/weft/internal/spiffe"
)

// Decision is the verdict on one inbound connection. It is a plain value,
// safe to copy and share.
type Decision struct {
	Allowed bool
	// Policy names the TrafficTarget that allowed the connection; for a
	// denial, the TrafficTargets (comma separated) that select the
	// destination, "" when none does.
	Policy string
	// Reason says why, in a sentence for the access log and the DROPPED
	// flow.
	Reason string
}

// Authorize decides whether src may connect to workload dst on port
// (ARCHITECTURE.md §6). A zero src is a plaintext peer.
//
// A destination ServiceAccount that no policy selects accepts anyone in
// permissive mode and no one in strict mode. Once a policy selects it, only
// the sources of the selecting policies may connect, on the ports of their
// rules (a rule without ports covers every port), and never in plaintext.
// Policies are additive. Fail closed: a rule with HTTP matches allows
// nothing here (it needs a waypoint), nor does a rule of a kind this
// package does not know, nor an Invalid policy.
//
// An allowed connection costs no allocation.
func (s *Snapshot) Authorize(src spiffe.ID, dst *Workload, port uint16) Decision {
	if dst == nil {
		return Decision{Reason: "destination is not a workload of this node's snapshot"}
	}
	d := s.index().dests[destKey{dst.Namespace, dst.ServiceAccount}]
	if d == nil {
		// dst comes from another Snapshot: no policy of this one selects
		// it.
		d = &destInfo{label: dst.Namespace + "/sa/" + dst.ServiceAccount}
		d.permissive = "permissive mode: no TrafficTarget selects " + d.label
	}
	strict := s.PolicyMode == ModeStrict
	if len(d.policies) == 0 {
		switch {
		case !strict:
			return Decision{Allowed: true, Reason: d.permissive}
		case src.IsZero():
			return Decision{Reason: "strict mode: plaintext connection refused: no TrafficTarget selects " + d.label}
		default:
			return Decision{Reason: "strict mode: no TrafficTarget selects " + d.label + ", so " + src.String() + " may not reach it on port " + strconv.Itoa(int(port))}
		}
	}
	if src.IsZero() {
		return Decision{Policy: d.selectedBy, Reason: "plaintext connection refused: " + d.label + " is selected by " + d.selectedByText}
	}

	// Remember what came close, to say why it did not allow.
	var needsWaypoint, unsupported, invalid *policyInfo
	var unsupportedKind string
	for _, p := range d.policies {
		if p.p.Invalid != "" {
			invalid = p
			continue
		}
		if !p.hasSource(src) {
			continue
		}
		for i := range p.p.Rules {
			r := &p.p.Rules[i]
			if !r.coversPort(port) {
				continue
			}
			switch {
			case r.HTTP:
				needsWaypoint = p
			case r.Kind != KindTCPRoute && r.Kind != KindHTTPRouteGroup:
				unsupported, unsupportedKind = p, r.Kind
			default:
				return Decision{Allowed: true, Policy: p.p.Name, Reason: p.allowed}
			}
		}
	}

	portStr := strconv.Itoa(int(port))
	var reason string
	switch {
	case needsWaypoint != nil:
		reason = "HTTP rules of " + needsWaypoint.p.Name + " need a waypoint: " +
			src.String() + " may not reach " + d.label + " on port " + portStr + " without one"
	case unsupported != nil:
		reason = "rule kind " + strconv.Quote(unsupportedKind) + " of " + unsupported.p.Name + " is not supported: " +
			src.String() + " may not reach " + d.label + " on port " + portStr
	default:
		reason = "no TrafficTarget allows " + src.String() + " to reach " + d.label + " on port " + portStr
	}
	if invalid != nil {
		reason += " (selected by " + d.selectedByText + "; " + invalid.p.Name + " is invalid and allows nothing: " + invalid.p.Invalid + ")"
	} else {
		reason += " (selected by " + d.selectedByText + ")"
	}
	return Decision{Policy: d.selectedBy, Reason: reason}
}

func (p *policyInfo) hasSource(id spiffe.ID) bool {
	for _, s := range p.sources {
		if s == id {
			return true
		}
	}
	return false
}

func (r *Rule) coversPort(port uint16) bool {
	if len(r.Ports) == 0 {
		return true
	}
	for _, p := range r.Ports {
		if p == port {
			return true
		}
	}
	return false
}
