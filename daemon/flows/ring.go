package flows

import (
	"sync"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// numLostSources bounds flowpb.LostEventSource values counted per source;
// larger (future) values are counted as UNKNOWN_LOST_EVENT_SOURCE.
const numLostSources = 4

// tally counts what a ring position stands for: the flows stored before it,
// and the events producers reported lost before it, by source.
type tally struct {
	flows uint64
	lost  [numLostSources]uint64
}

func (t tally) minus(o tally) tally {
	d := tally{flows: t.flows - o.flows}
	for i := range d.lost {
		d.lost[i] = t.lost[i] - o.lost[i]
	}
	return d
}

func (t tally) zero() bool { return t == tally{} }

// total is the number of events t stands for.
func (t tally) total() uint64 {
	n := t.flows
	for _, l := range t.lost {
		n += l
	}
	return n
}

func lostSource(s flowpb.LostEventSource) int {
	if s < 0 || int(s) >= numLostSources {
		return 0
	}
	return int(s)
}

// entry is one stored event: a flow, or a loss reported by a producer.
// Entries are immutable once pushed; the ring hands out copies.
type entry struct {
	flow *flowpb.Flow      // exactly one of flow and lost is non-nil
	lost *flowpb.LostEvent // NumEventsLost > 0
	// before is the ring's tally when the entry was pushed.
	before tally
}

// cursor is a reader's position: the sequence number of the next entry it
// reads, and the ring's tally just before that entry. Each reader owns its
// cursor; the ring never tracks readers.
type cursor struct {
	seq uint64
	at  tally
}

// ring is a bounded sequence of entries that overwrites its oldest entry
// when full. Writers never wait for readers: a reader that falls more than
// the ring's capacity behind is moved forward and told exactly what it
// skipped, so delivered + reported lost = written.
//
// ring is safe for concurrent use.
type ring struct {
	// mu guards the fields below. It is held only to copy entries.
	mu   sync.Mutex
	buf  []entry
	next uint64 // sequence number of the next push; entries [next-len(buf), next) are stored
	sum  tally  // tally of everything ever pushed
	// wake, when non-nil, is closed by the next push. Readers that found
	// nothing to read wait on it.
	wake chan struct{}
}

func newRing(size int) *ring {
	return &ring{buf: make([]entry, size)}
}

// push stores e (flow or lost set), overwriting the oldest entry when full.
func (r *ring) push(e entry) {
	r.mu.Lock()
	e.before = r.sum
	r.buf[r.next%uint64(len(r.buf))] = e
	r.next++
	if e.flow != nil {
		r.sum.flows++
	} else {
		r.sum.lost[lostSource(e.lost.Source)] += e.lost.NumEventsLost
	}
	wake := r.wake
	r.wake = nil
	r.mu.Unlock()
	if wake != nil {
		close(wake)
	}
}

// oldestLocked is the sequence number of the oldest stored entry (next when
// empty). r.mu must be held.
func (r *ring) oldestLocked() uint64 {
	if n := uint64(len(r.buf)); r.next > n {
		return r.next - n
	}
	return 0
}

// atLocked returns the entry with sequence number seq, which must be stored.
// r.mu must be held.
func (r *ring) atLocked(seq uint64) *entry { return &r.buf[seq%uint64(len(r.buf))] }

// end is the cursor just past the newest entry.
func (r *ring) end() cursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return cursor{seq: r.next, at: r.sum}
}

// oldest is the cursor at the oldest stored entry.
func (r *ring) oldest() cursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cursorLocked(r.oldestLocked())
}

// cursorLocked is the cursor at seq, a stored entry or next. r.mu must be held.
func (r *ring) cursorLocked(seq uint64) cursor {
	if seq == r.next {
		return cursor{seq: r.next, at: r.sum}
	}
	return cursor{seq: seq, at: r.atLocked(seq).before}
}

// read copies entries from c on into dst, stopping before end (a cursor
// from end, or one with seq ^uint64(0) for no end), and advances c past
// them. If entries at c were overwritten, c first moves to the oldest
// stored entry (or to end, if that is older), and skipped tallies what it
// passed. When there is nothing to read yet (n == 0 and c is before end),
// wake is closed by the next push.
func (r *ring) read(c *cursor, dst []entry, end cursor) (n int, skipped tally, wake <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if oldest := r.oldestLocked(); c.seq < oldest {
		to := r.cursorLocked(oldest)
		if end.seq < oldest {
			to = end
		}
		skipped = to.at.minus(c.at)
		*c = to
	}
	for n < len(dst) && c.seq < r.next && c.seq < end.seq {
		e := r.atLocked(c.seq)
		dst[n] = *e
		n++
		c.seq++
		c.at = e.before
		if e.flow != nil {
			c.at.flows++
		} else {
			c.at.lost[lostSource(e.lost.Source)] += e.lost.NumEventsLost
		}
	}
	if n == 0 && c.seq < end.seq {
		if r.wake == nil {
			r.wake = make(chan struct{})
		}
		wake = r.wake
	}
	return n, skipped, wake
}

// readBack copies the stored entries before seq into dst, newest last: at
// most len(dst) of them, none older than the oldest stored entry. first is
// the sequence number of dst[0].
func (r *ring) readBack(seq uint64, dst []entry) (n int, first uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq = min(seq, r.next)
	first = max(r.oldestLocked(), seq-min(seq, uint64(len(dst))))
	for s := first; s < seq; s++ {
		dst[n] = *r.atLocked(s)
		n++
	}
	return n, first
}

// stats returns the number of stored flows, the ring's capacity and the
// number of flows ever pushed.
func (r *ring) stats() (stored, capacity int, seen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	oldest := r.oldestLocked()
	stored = int(r.next - oldest)
	if stored > 0 {
		// Count flows only, not stored losses.
		stored = int(r.sum.flows - r.atLocked(oldest).before.flows)
	}
	return stored, len(r.buf), r.sum.flows
}
