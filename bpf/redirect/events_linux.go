package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// EventReader reads the datapath's events ring buffer. Read and Close may
// be called from different goroutines; one reader per Objects is enough
// (each event is delivered to one reader only).
type EventReader struct {
	rd *ringbuf.Reader
}

// NewEventReader opens a reader of the events ring buffer. The ring buffer
// is not pinned: events written while no agent runs are lost.
func (o *Objects) NewEventReader() (*EventReader, error) {
	rd, err := ringbuf.NewReader(o.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open datapath events ring buffer: %w", err)
	}
	return &EventReader{rd: rd}, nil
}

// Read blocks until the next event. After Close it returns an error
// wrapping os.ErrClosed.
func (r *EventReader) Read() (Event, error) {
	rec, err := r.rd.Read()
	if err != nil {
		return Event{}, fmt.Errorf("read datapath event: %w", err)
	}
	return decodeEvent(rec.RawSample, monotonicToWall)
}

// Close stops the reader, interrupting a blocked Read.
func (r *EventReader) Close() error { return r.rd.Close() }

// EventsLost returns how many events did not fit in the ring buffer since
// Load (summed over CPUs).
func (o *Objects) EventsLost() (uint64, error) {
	var per []uint64
	if err := o.objs.EventsLost.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read lost datapath events: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

var errShortEvent = errors.New("short datapath event")

// decodeEvent converts a raw datapath_event.
func decodeEvent(raw []byte, wall func(ns uint64) time.Time) (Event, error) {
	var e redirectDatapathEvent
	if len(raw) < int(unsafe.Sizeof(e)) {
		return Event{}, fmt.Errorf("decode %d bytes: %w", len(raw), errShortEvent)
	}
	e = *(*redirectDatapathEvent)(unsafe.Pointer(&raw[0]))
	ev := Event{
		Kind:        EventKind(e.Kind),
		Time:        wall(e.TimestampNs),
		NetnsCookie: e.NetnsCookie,
		CgroupID:    e.CgroupId,
		Src:         addrPort(e.SrcIp4, e.SrcPort),
		Dst:         addrPort(e.DstIp4, e.DstPort),
	}
	if e.Err < 0 {
		ev.Errno = syscall.Errno(-e.Err)
	}
	return ev, nil
}

func addrPort(ip uint32, port uint16) netip.AddrPort {
	a := ip4FromBE(ip)
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(a, beToHost16(port))
}

// monotonicToWall converts a bpf_ktime_get_ns timestamp to wall time.
func monotonicToWall(ns uint64) time.Time {
	now := time.Now()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return now
	}
	return now.Add(-time.Duration(ts.Nano() - int64(ns)))
}
