package state

import (
	"log/slog"
	"sync"
	"sync/atomic"
)

// Store holds the current Snapshot and replaces it atomically; readers call
// Current per decision and never see a half-applied update. A Store is safe
// for concurrent use.
type Store struct {
	log        *slog.Logger
	ready      chan struct{}
	cur        atomic.Pointer[Snapshot] // non-nil
	loadErrors atomic.Uint64

	// setMu serialises Set, and is held while subscribers run, so that
	// they see the changes one at a time and in order.
	setMu sync.Mutex

	mu      sync.Mutex // guards the fields below
	subs    []*subscription
	lastErr error
	isReady bool

	// Lock order: setMu, then mu.
}

type subscription struct {
	fn     func(old, new *Snapshot)
	active atomic.Bool
}

// NewStore returns a Store holding an empty Snapshot. log (nil discards)
// receives what WatchFile loads and rejects.
func NewStore(log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{log: log, ready: make(chan struct{})}
	s.cur.Store((&Snapshot{}).indexed())
	return s
}

// Current returns the current Snapshot; never nil (an empty Snapshot before
// the first one is set).
func (s *Store) Current() *Snapshot { return s.cur.Load() }

// Ready returns a channel closed once the first Snapshot is set.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Set publishes snap (nil means an empty Snapshot) as the current Snapshot
// and then calls the subscribers. snap should have passed Validate; it must
// not be modified afterwards. If snap was not indexed (by Parse or an
// earlier Set), an indexed shallow copy of it is published instead. Setting
// the current Snapshot again is not a change and does nothing.
func (s *Store) Set(snap *Snapshot) {
	if snap == nil {
		snap = &Snapshot{}
	}
	snap = snap.indexed()

	s.setMu.Lock()
	defer s.setMu.Unlock()
	old := s.cur.Swap(snap)
	s.mu.Lock()
	if !s.isReady {
		s.isReady = true
		close(s.ready)
	}
	subs := s.subs
	s.mu.Unlock()
	if old == snap {
		return
	}
	for _, sub := range subs {
		if sub.active.Load() {
			sub.fn(old, snap)
		}
	}
}

// Subscribe registers fn to be called after each change of the current
// Snapshot with the replaced and the new one, in the order of the changes
// and never concurrently with itself. fn runs on the goroutine that made
// the change, while further changes wait: it must be quick and must not call
// Set. To start from the current state, call Current after Subscribe.
//
// cancel stops further calls (a call already running finishes); it may be
// called more than once, and from fn.
func (s *Store) Subscribe(fn func(old, new *Snapshot)) (cancel func()) {
	sub := &subscription{fn: fn}
	sub.active.Store(true)
	s.mu.Lock()
	// Copy on write: Set iterates over the slice it read without the lock.
	s.subs = append(s.subs[:len(s.subs):len(s.subs)], sub)
	s.mu.Unlock()
	return func() {
		if !sub.active.Swap(false) {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		subs := make([]*subscription, 0, len(s.subs))
		for _, o := range s.subs {
			if o != sub {
				subs = append(subs, o)
			}
		}
		s.subs = subs
	}
}

// LoadErrors returns how many times WatchFile found its file missing,
// unreadable, unparsable or invalid (each problem counted once, not at
// every poll while it lasts).
func (s *Store) LoadErrors() uint64 { return s.loadErrors.Load() }

// LastError returns the problem of WatchFile's latest load attempt, or nil
// when the file loaded (for a status page).
func (s *Store) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

func (s *Store) setLastError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
}
