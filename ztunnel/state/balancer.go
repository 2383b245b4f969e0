package state

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// Balancer picks the endpoint of each Service connection, round robin per
// Service. Its rotation survives snapshot updates: it is keyed by the
// Service's namespace and name, not by a Snapshot's pointers. The zero
// Balancer is ready to use. A Balancer is safe for concurrent use.
type Balancer struct {
	mu sync.RWMutex // guards the field below
	// next holds each Service's rotation. Entries are only added under
	// mu; the counters themselves are atomic.
	next map[svcKey]*atomic.Uint64
}

type svcKey struct{ ns, name string }

// Pick returns the candidate of r to use, skipping those for which skip
// (which may be nil) reports true, e.g. endpoints that just failed to
// connect. It returns false when no candidate is left. For a Resolution
// without a Service it returns the first candidate not skipped.
func (b *Balancer) Pick(r Resolution, skip func(Target) bool) (Target, bool) {
	n := len(r.Candidates)
	if n == 0 {
		return Target{}, false
	}
	start := 0
	if r.Service != nil && n > 1 {
		start = int(b.counter(svcKey{r.Service.Namespace, r.Service.Name}).Add(1) % uint64(n))
	}
	for i := range n {
		t := r.Candidates[(start+i)%n]
		if skip == nil || !skip(t) {
			return t, true
		}
	}
	return Target{}, false
}

func (b *Balancer) counter(k svcKey) *atomic.Uint64 {
	b.mu.RLock()
	c := b.next[k]
	b.mu.RUnlock()
	if c != nil {
		return c
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c = b.next[k]; c == nil {
		if b.next == nil {
			b.next = make(map[svcKey]*atomic.Uint64)
		}
		c = new(atomic.Uint64)
		// Start each node's rotation somewhere else, so that proxies
		// that start together do not all send their first connection
		// to the same endpoint.
		c.Store(rand.Uint64())
		b.next[k] = c
	}
	return c
}

// Prune forgets the rotation of Services that s no longer has. Call it when
// the snapshot changes (Store.Subscribe), so that deleted Services do not
// accumulate.
func (b *Balancer) Prune(s *Snapshot) {
	keep := make(map[svcKey]bool, len(s.Services))
	for _, svc := range s.Services {
		keep[svcKey{svc.Namespace, svc.Name}] = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.next {
		if !keep[k] {
			delete(b.next, k)
		}
	}
}
