package redirect

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// readEvents delivers the events of o on a channel until Cleanup.
func readEvents(t *testing.T, o *Objects) <-chan Event {
	t.Helper()
	rd, err := o.NewEventReader()
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan Event, 64)
	done := make(chan struct{})
	go func() { // owned by the test: ends when rd is closed at Cleanup
		defer close(done)
		for {
			ev, err := rd.Read()
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("read event: %v", err)
				return
			}
			ch <- ev
		}
	}()
	t.Cleanup(func() { rd.Close(); <-done })
	return ch
}

func nextEvent(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no datapath event within 5s")
	}
	return Event{}
}

// TestEventRedirectRecordFailed: when connect() of an enrolled pod cannot
// record the original destination (sk_orig full; a test-only 1-entry plain
// hash instead of the LRU), the app gets EPERM and the datapath reports the
// connection with its destination, pod and cgroup on the events ring.
func TestEventRedirectRecordFailed(t *testing.T) {
	requirePrivileged(t)
	editSpec = func(spec *ebpf.CollectionSpec) {
		spec.Maps[redirectMapSkOrig].Type = ebpf.Hash
		spec.Maps[redirectMapSkOrig].MaxEntries = 1
	}
	t.Cleanup(func() { editSpec = nil })
	e := newOutboundEnv(t, Options{})
	editSpec = nil
	if err := e.o.objs.SkOrig.Put(uint64(1), redirectOrigAddr{}); err != nil {
		t.Fatalf("fill sk_orig: %v", err)
	}
	events := readEvents(t, e.o)
	e.enroll(t)
	app := startChild(t, e.pod, e.cgroup)
	cg, err := cgroupID(e.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()

	resp := app.do(t, childReq{Op: "dial", ID: "c0", Net: "tcp4", Addr: dst80})
	if !strings.Contains(resp.Err, "operation not permitted") {
		t.Errorf("dial %s with sk_orig full: err %q, want EPERM", dst80, resp.Err)
	}
	ev := nextEvent(t, events)
	want := Event{
		Kind:        EventRedirectRecordFailed,
		Errno:       syscall.E2BIG,
		NetnsCookie: e.cookie,
		CgroupID:    cg,
		Src:         netip.AddrPortFrom(podIP, 0),
		Dst:         netip.MustParseAddrPort(dst80),
	}
	got := ev
	got.Time = time.Time{}
	if got != want {
		t.Errorf("event = %+v\nwant    %+v", got, want)
	}
	if ev.Time.Before(start.Add(-time.Second)) || ev.Time.After(time.Now().Add(time.Second)) {
		t.Errorf("event time %v not within the test (%v..now)", ev.Time, start)
	}
	if n, err := e.o.EventsLost(); err != nil || n != 0 {
		t.Errorf("EventsLost = %d, %v; want 0", n, err)
	}
}

// TestEventInboundNoListener: an inbound SYN dropped because ztunnel's
// listener is missing is reported with the packet's addresses and the pod
// netns.
func TestEventInboundNoListener(t *testing.T) {
	requirePrivileged(t)
	p := newPair(t)
	o := mustLoad(t, Options{})
	events := readEvents(t, o)
	serve(t, p.pod, "tcp4", "0.0.0.0:8080", fixed("app"))
	cookie, err := o.AttachIngress(p.pod.runner(), "eth0", IngressConfig{PodIP: podIP})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.AddrPortFrom(remoteIP, 40123)
	dst := netip.AddrPortFrom(podIP, 8080)
	if c, err := dialFrom(p.node, src, dst, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("dial %s without inbound listener succeeded, want the SYN dropped", dst)
	}
	ev := nextEvent(t, events)
	if ev.Kind != EventInboundNoListener || ev.Src != src || ev.Dst != dst || ev.NetnsCookie != cookie || ev.Errno != 0 {
		t.Errorf("event = %+v, want kind %s from %s to %s in netns %d", ev, EventInboundNoListener, src, dst, cookie)
	}
}

// TestEventsLost: events that do not fit in the ring buffer (a test-only
// single page) are counted exactly: read + lost = connections refused.
func TestEventsLost(t *testing.T) {
	requirePrivileged(t)
	editSpec = func(spec *ebpf.CollectionSpec) {
		spec.Maps[redirectMapSkOrig].Type = ebpf.Hash
		spec.Maps[redirectMapSkOrig].MaxEntries = 1
		spec.Maps[redirectMapEvents].MaxEntries = uint32(os.Getpagesize())
	}
	t.Cleanup(func() { editSpec = nil })
	e := newOutboundEnv(t, Options{})
	editSpec = nil
	if err := e.o.objs.SkOrig.Put(uint64(1), redirectOrigAddr{}); err != nil {
		t.Fatalf("fill sk_orig: %v", err)
	}
	e.enroll(t)
	app := startChild(t, e.pod, e.cgroup)

	// Nobody reads while the connections are refused: the ring fills up.
	const n = 150
	for i := range n {
		if resp := app.do(t, childReq{Op: "dial", ID: "c", Net: "tcp4", Addr: dst80}); resp.Err == "" {
			t.Fatalf("dial %d with sk_orig full succeeded, want EPERM", i)
		}
	}
	lost, err := e.o.EventsLost()
	if err != nil {
		t.Fatal(err)
	}
	if lost == 0 || lost >= n {
		t.Fatalf("EventsLost = %d after %d refused connects into a %d-byte ring, want some but not all", lost, n, os.Getpagesize())
	}
	events := readEvents(t, e.o)
	read := 0
	for uint64(read)+lost < n {
		ev := nextEvent(t, events)
		if ev.Kind != EventRedirectRecordFailed || ev.Dst.String() != dst80 {
			t.Fatalf("event %d = %+v, want a refused connect to %s", read, ev, dst80)
		}
		read++
	}
	select {
	case ev := <-events:
		t.Errorf("read %d + lost %d = %d events, then one more: %+v", read, lost, n, ev)
	case <-time.After(200 * time.Millisecond):
	}
	t.Logf("%d refused connects: %d events read, %d lost", n, read, lost)
}
