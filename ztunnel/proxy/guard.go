package proxy

import (
	"log/slog"
	"sync"

	"github.com/weftmesh/weft/ztunnel/state"
	"github.com/weftmesh/weft/ztunnel/telemetry"
)

// guard holds every open inbound connection with what it was authorized
// for, and closes the ones a new policy no longer allows (Istio's ztunnel
// does the same in its connection manager).
//
// guard is safe for concurrent use.
type guard struct {
	log *slog.Logger

	// mu guards the field below.
	mu    sync.Mutex
	conns map[*guarded]struct{}
}

// guarded is one authorized inbound connection.
type guarded struct {
	uid   string // destination pod
	port  uint16
	info  telemetry.ConnInfo
	close func()

	// mu guards the field below.
	mu     sync.Mutex
	denied string // the policy reason that closed it, if any
}

func newGuard(log *slog.Logger) *guard {
	return &guard{log: log, conns: make(map[*guarded]struct{})}
}

// add registers an inbound connection to pod uid on port; close ends it.
func (g *guard) add(uid string, port uint16, info telemetry.ConnInfo, close func()) *guarded {
	gc := &guarded{uid: uid, port: port, info: info, close: close}
	g.mu.Lock()
	g.conns[gc] = struct{}{}
	g.mu.Unlock()
	return gc
}

func (g *guard) remove(c *guarded) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
}

// recheck re-authorizes every open connection against snap and closes those
// it denies.
func (g *guard) recheck(snap *state.Snapshot) {
	g.mu.Lock()
	conns := make([]*guarded, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		dst := snap.WorkloadByUID(c.uid)
		if dst == nil {
			// The pod left the config; the agent's removal closes it.
			continue
		}
		d := snap.Authorize(c.info.Source.Identity, dst, c.port)
		if d.Allowed {
			continue
		}
		c.mu.Lock()
		c.denied = d.Reason
		c.mu.Unlock()
		g.log.Info("policy change closes connection", "src", c.info.Source.Addr.String(), "src.identity", c.info.Source.Identity.String(),
			"dst", c.info.Destination.Addr.String(), "policy", d.Policy, "reason", d.Reason)
		c.close()
	}
}

// ended returns the response flags and error a connection ended with: the
// policy reason if a policy change closed it.
func (c *guarded) ended(err error) (telemetry.ResponseFlags, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.denied != "" {
		return telemetry.FlagDenied, &PolicyClosedError{Reason: c.denied}
	}
	return telemetry.FlagNone, err
}

// PolicyClosedError ends a connection that a policy change no longer allows.
type PolicyClosedError struct{ Reason string }

func (e *PolicyClosedError) Error() string { return "closed by policy change: " + e.Reason }

// ErrorKind is the error's label value in weft_ztunnel_connection_errors_total.
func (e *PolicyClosedError) ErrorKind() string { return "policy_closed" }
