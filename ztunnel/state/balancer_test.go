package state

import (
	"sync"
	"testing"
)

func mustResolve(tb testing.TB, s *Snapshot, dst string) Resolution {
	tb.Helper()
	r, err := s.Resolve(ap(dst))
	if err != nil {
		tb.Fatalf("Resolve(%s) = %v", dst, err)
	}
	return r
}

func TestBalancerRoundRobin(t *testing.T) {
	s := example(t)
	r := mustResolve(t, s, "10.96.0.10:80") // 3 ready endpoints
	var b Balancer
	const rounds = 5
	counts := map[string]int{}
	var order []string
	for range rounds * len(r.Candidates) {
		tg, ok := b.Pick(r, nil)
		if !ok {
			t.Fatal("Pick() = false, want a candidate")
		}
		counts[tg.Addr.String()]++
		order = append(order, tg.Addr.String())
	}
	for _, c := range r.Candidates {
		if got := counts[c.Addr.String()]; got != rounds {
			t.Errorf("%s picked %d times in %d picks, want %d (order %v)", c.Addr, got, rounds*len(r.Candidates), rounds, order)
		}
	}
	// Round robin, not just an even count: no candidate twice in a row.
	for i := 1; i < len(order); i++ {
		if order[i] == order[i-1] {
			t.Errorf("pick %d and %d both %s, want rotation (order %v)", i-1, i, order[i], order)
		}
	}
}

func TestBalancerSkip(t *testing.T) {
	s := example(t)
	r := mustResolve(t, s, "10.96.0.10:80")
	failed := r.Candidates[1].Addr
	tests := []struct {
		name   string
		skip   func(Target) bool
		wantOK bool
	}{
		{"skip one", func(tg Target) bool { return tg.Addr == failed }, true},
		{"skip all", func(Target) bool { return true }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Balancer
			seen := map[string]bool{}
			for range 10 {
				tg, ok := b.Pick(r, tt.skip)
				if ok != tt.wantOK {
					t.Fatalf("Pick() ok = %v, want %v", ok, tt.wantOK)
				}
				if !ok {
					continue
				}
				if tt.skip(tg) {
					t.Errorf("Pick() = %s, which skip rejects", tg.Addr)
				}
				seen[tg.Addr.String()] = true
			}
			if tt.wantOK && len(seen) != len(r.Candidates)-1 {
				t.Errorf("Pick() returned %v, want every candidate but %s", seen, failed)
			}
		})
	}
}

// Each Service rotates on its own: picks for one do not shift another.
func TestBalancerPerService(t *testing.T) {
	s := example(t)
	cart := mustResolve(t, s, "10.96.0.10:80")
	db := mustResolve(t, s, "10.96.0.20:5432")
	var b Balancer
	first, _ := b.Pick(cart, nil)
	for range 7 {
		b.Pick(db, nil)
	}
	next, _ := b.Pick(cart, nil)
	want := cart.Candidates[0].Addr
	for i, c := range cart.Candidates {
		if c.Addr == first.Addr {
			want = cart.Candidates[(i+1)%len(cart.Candidates)].Addr
		}
	}
	if next.Addr != want {
		t.Errorf("after %s and 7 picks of another service, Pick() = %s, want %s", first.Addr, next.Addr, want)
	}
}

func TestBalancerNoService(t *testing.T) {
	s := example(t)
	r := mustResolve(t, s, "10.1.0.2:7000")
	var b Balancer
	if tg, ok := b.Pick(r, nil); !ok || tg.Addr != ap("10.1.0.2:7000") {
		t.Errorf("Pick(workload) = %v, %v; want 10.1.0.2:7000, true", tg.Addr, ok)
	}
	if _, ok := b.Pick(r, func(Target) bool { return true }); ok {
		t.Errorf("Pick(workload, skip all) = true, want false")
	}
	if _, ok := b.Pick(Resolution{}, nil); ok {
		t.Errorf("Pick(empty) = true, want false")
	}
}

// Concurrent picks still spread exactly evenly, and survive Prune.
func TestBalancerConcurrent(t *testing.T) {
	s := example(t)
	r := mustResolve(t, s, "10.96.0.10:80")
	var b Balancer
	const workers, each = 4, 300
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			local := map[string]int{}
			for range each {
				tg, _ := b.Pick(r, nil)
				local[tg.Addr.String()]++
				b.Prune(s)
			}
			mu.Lock()
			defer mu.Unlock()
			for k, v := range local {
				counts[k] += v
			}
		})
	}
	wg.Wait()
	want := workers * each / len(r.Candidates)
	for _, c := range r.Candidates {
		if got := counts[c.Addr.String()]; got != want {
			t.Errorf("%s picked %d times, want %d", c.Addr, got, want)
		}
	}
}

func TestBalancerPrune(t *testing.T) {
	s := example(t)
	var b Balancer
	b.Pick(mustResolve(t, s, "10.96.0.10:80"), nil)
	b.Pick(mustResolve(t, s, "10.96.0.20:5432"), nil)
	b.Prune(&Snapshot{Services: s.Services[:1]})
	b.mu.RLock()
	defer b.mu.RUnlock()
	if _, ok := b.next[svcKey{"legacy", "db"}]; ok {
		t.Errorf("after Prune without legacy/db, its rotation is still kept")
	}
	if _, ok := b.next[svcKey{"shop", "cart"}]; !ok {
		t.Errorf("after Prune with shop/cart, its rotation is gone")
	}
}
