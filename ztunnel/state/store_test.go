package state

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds, failing the test after a few seconds.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// holdsFor fails the test if cond stops holding within d: it shows that
// something does not happen while the watcher polls many times.
func holdsFor(tb testing.TB, what string, d time.Duration, cond func() bool) {
	tb.Helper()
	end := time.Now().Add(d)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) {
		if !cond() {
			tb.Fatalf("%s stopped holding", what)
		}
		<-tick.C
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// testLogger writes the Store's log to the test's log.
func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// watch runs s.WatchFile(path) until the test ends.
func watch(tb testing.TB, s *Store, path string) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.WatchFile(ctx, path, 2*time.Millisecond) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("WatchFile() = %v, want nil after cancel", err)
		}
	})
}

// versionDoc is validDoc with a version, all versions of equal length
// giving files of equal size.
func versionDoc(v string) []byte {
	return []byte(strings.Replace(validDoc, `{`, `{"version": "`+v+`", `, 1))
}

func version(s *Store) string { return s.Current().Version }

func TestStoreBeforeFirstSnapshot(t *testing.T) {
	s := NewStore(nil)
	cur := s.Current()
	if cur == nil {
		t.Fatal("Current() = nil before the first snapshot, want an empty snapshot")
	}
	if len(cur.Workloads) != 0 || cur.WorkloadByIP(ip("10.0.0.1")) != nil {
		t.Errorf("Current() = %+v, want an empty snapshot", cur)
	}
	if isClosed(s.Ready()) {
		t.Error("Ready() closed before the first snapshot")
	}
	if d := cur.Authorize(sa("a"), &Workload{Namespace: "shop", ServiceAccount: "d"}, 80); !d.Allowed {
		t.Errorf("Authorize on the empty snapshot = %+v, want allowed (permissive, nothing selected)", d)
	}
}

func TestStoreSet(t *testing.T) {
	s := NewStore(nil)
	snap := mustParse(t, versionDoc("v1"))
	s.Set(snap)
	if !isClosed(s.Ready()) {
		t.Error("Ready() not closed after Set")
	}
	if got := s.Current(); got != snap {
		t.Errorf("Current() = %p, want the snapshot set (%p)", got, snap)
	}

	// A snapshot built by hand is indexed when set.
	hand := &Snapshot{Version: "hand", Workloads: mustParse(t, []byte(validDoc)).Workloads}
	s.Set(hand)
	if w := s.Current().WorkloadByIP(ip("10.0.0.1")); s.Current().Version != "hand" || w == nil {
		t.Errorf("after Set(hand-built): version %q, WorkloadByIP(10.0.0.1) = %v; want hand, shop/cart", s.Current().Version, w)
	}
	if s.Current().idx == nil {
		t.Error("Set(hand-built) published a snapshot without an index")
	}

	s.Set(nil)
	if got := s.Current(); got == nil || len(got.Workloads) != 0 {
		t.Errorf("after Set(nil), Current() = %+v, want an empty snapshot", got)
	}
}

func TestStoreSubscribeOrder(t *testing.T) {
	s := NewStore(nil)
	type change struct{ old, new string }
	var got []change
	cancel := s.Subscribe(func(old, new *Snapshot) { got = append(got, change{old.Version, new.Version}) })
	a, b, c := mustParse(t, versionDoc("a")), mustParse(t, versionDoc("b")), mustParse(t, versionDoc("c"))
	s.Set(a)
	s.Set(b)
	s.Set(b) // not a change
	s.Set(c)
	cancel()
	cancel() // twice is fine
	s.Set(a) // not seen: cancelled
	want := []change{{"", "a"}, {"a", "b"}, {"b", "c"}}
	if len(got) != len(want) {
		t.Fatalf("changes = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("changes = %v, want %v", got, want)
			break
		}
	}
}

// Concurrent Sets reach each subscriber one at a time, as a chain: each
// call's old is the previous call's new.
func TestStoreSubscribeConcurrentSets(t *testing.T) {
	s := NewStore(nil)
	first := s.Current()
	var (
		running  atomic.Int32
		overlaps atomic.Int32
		chain    []*Snapshot // written by the subscriber only; it never runs concurrently
		broken   int
	)
	last := first
	s.Subscribe(func(old, new *Snapshot) {
		if running.Add(1) != 1 {
			overlaps.Add(1)
		}
		defer running.Add(-1)
		if old != last {
			broken++
		}
		last = new
		chain = append(chain, new)
	})
	// A second subscriber that cancels itself from inside its call.
	var selfCalls atomic.Int32
	var selfCancel func()
	var once sync.Once
	selfCancel = s.Subscribe(func(old, new *Snapshot) {
		selfCalls.Add(1)
		once.Do(selfCancel)
	})

	const setters, each = 4, 50
	var wg sync.WaitGroup
	for i := range setters {
		wg.Go(func() {
			for j := range each {
				s.Set(&Snapshot{Version: string(rune('a'+i)) + string(rune('0'+j%10))})
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Errorf("subscriber ran concurrently with itself %d times", n)
	}
	if broken != 0 {
		t.Errorf("%d calls had an old snapshot that was not the previous call's new one", broken)
	}
	if got, want := len(chain), setters*each; got != want {
		t.Errorf("subscriber called %d times, want %d", got, want)
	}
	if chain[len(chain)-1] != s.Current() {
		t.Errorf("last change seen = %q, want the current snapshot %q", chain[len(chain)-1].Version, s.Current().Version)
	}
	if got := selfCalls.Load(); got != 1 {
		t.Errorf("subscriber that cancelled itself was called %d times, want 1", got)
	}
}

func TestWatchFileKeepsLastGood(t *testing.T) {
	path := tempPath(t)
	writeFile(t, path, versionDoc("v1"))
	s := NewStore(testLogger(t))
	watch(t, s, path)
	select {
	case <-s.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("Ready() not closed after loading a good file")
	}
	if got := version(s); got != "v1" {
		t.Fatalf("Current().Version = %q, want v1", got)
	}
	if got := s.LoadErrors(); got != 0 {
		t.Errorf("LoadErrors() = %d after a good file, want 0", got)
	}

	tests := []struct {
		name    string
		write   func()
		wantErr string
	}{
		{"unparsable", func() { replaceFile(t, path, []byte(`{"workloads": [`)) }, "parse snapshot"},
		{"invalid", func() {
			replaceFile(t, path, bytes.Replace(versionDoc("v2"), []byte(`"10.0.0.1"]`), []byte(`"10.0.0.999"]`), 1))
		}, `workload shop/cart: invalid ip "10.0.0.999"`},
		{"missing", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "no such file"},
		{"unreadable", func() {
			if err := os.Mkdir(path, 0o755); err != nil { // a directory reads as an error
				t.Fatal(err)
			}
		}, "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.LoadErrors()
			tt.write()
			waitFor(t, "the bad file to be counted", func() bool { return s.LoadErrors() > before })
			if got := version(s); got != "v1" {
				t.Errorf("Current().Version = %q after a %s file, want the last good v1", got, tt.name)
			}
			if err := s.LastError(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LastError() = %v, want one containing %q", err, tt.wantErr)
			}
			// Polls of the unchanged bad file (every 2 ms) do not count it
			// again.
			holdsFor(t, "LoadErrors() == before+1", 50*time.Millisecond, func() bool { return s.LoadErrors() == before+1 })
			if got := version(s); got != "v1" {
				t.Errorf("Current().Version = %q after polls of a %s file, want the last good v1", got, tt.name)
			}
		})
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	replaceFile(t, path, versionDoc("v3"))
	waitFor(t, "v3 to load", func() bool { return version(s) == "v3" })
	if err := s.LastError(); err != nil {
		t.Errorf("LastError() = %v after a good file, want nil", err)
	}
}

// A file missing at start loads once it appears.
func TestWatchFileMissingAtStart(t *testing.T) {
	path := tempPath(t)
	s := NewStore(testLogger(t))
	watch(t, s, path)
	waitFor(t, "the missing file to be counted", func() bool { return s.LoadErrors() == 1 })
	holdsFor(t, "LoadErrors() == 1", 50*time.Millisecond, func() bool { return s.LoadErrors() == 1 })
	if isClosed(s.Ready()) {
		t.Error("Ready() closed without a good snapshot")
	}
	replaceFile(t, path, versionDoc("v1"))
	waitFor(t, "Ready", func() bool { return isClosed(s.Ready()) })
	if got := version(s); got != "v1" {
		t.Errorf("Current().Version = %q, want v1", got)
	}
	if got := s.LoadErrors(); got != 1 {
		t.Errorf("LoadErrors() = %d, want 1 (the missing file, counted once)", got)
	}
}

// Rewrites that keep the size, and even the modification time, are seen.
func TestWatchFileSameSizeRewrite(t *testing.T) {
	tests := []struct {
		name    string
		rewrite func(t *testing.T, path string, b []byte)
	}{
		{"in place", func(t *testing.T, path string, b []byte) { writeFile(t, path, b) }},
		{"in place, modification time restored", func(t *testing.T, path string, b []byte) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, b)
			if err := os.Chtimes(path, time.Time{}, fi.ModTime()); err != nil {
				t.Fatal(err)
			}
		}},
		{"renamed over, old modification time", func(t *testing.T, path string, b []byte) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			tmp := path + ".new"
			writeFile(t, tmp, b)
			if err := os.Chtimes(tmp, time.Time{}, fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempPath(t)
			v1, v2 := versionDoc("v1"), versionDoc("v2")
			writeFile(t, path, v1)
			old := time.Now().Add(-time.Hour) // long settled: the racy re-read is over
			if strings.HasPrefix(tt.name, "renamed") {
				if err := os.Chtimes(path, time.Time{}, old); err != nil {
					t.Fatal(err)
				}
			}
			s := NewStore(testLogger(t))
			var seen []string
			var mu sync.Mutex
			s.Subscribe(func(_, new *Snapshot) {
				mu.Lock()
				defer mu.Unlock()
				seen = append(seen, new.Version)
			})
			watch(t, s, path)
			waitFor(t, "v1 to load", func() bool { return version(s) == "v1" })
			tt.rewrite(t, path, v2)
			waitFor(t, "v2 to load", func() bool { return version(s) == "v2" })
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 2 || seen[0] != "v1" || seen[1] != "v2" {
				t.Errorf("changes seen = %v, want [v1 v2]", seen)
			}
		})
	}
}

func TestWatchFileStops(t *testing.T) {
	s := NewStore(nil)
	if err := s.WatchFile(context.Background(), tempPath(t), 0); err == nil {
		t.Error("WatchFile(interval 0) = nil, want an error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.WatchFile(ctx, tempPath(t), time.Millisecond); err != nil {
		t.Errorf("WatchFile(ended ctx) = %v, want nil", err)
	}
}
