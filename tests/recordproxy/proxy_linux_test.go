package recordproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
	"github.com/weftmesh/weft/daemon/handoff"
)

var (
	outboundAddr = fmt.Sprintf("127.0.0.1:%d", OutboundPort)
	inboundAddr  = fmt.Sprintf("127.0.0.1:%d", InboundPort)
	hboneAddr    = fmt.Sprintf("127.0.0.1:%d", HBONEPort)
)

// podOf returns the proxy's state of the pod uid, or nil.
func (p *Proxy) podOf(uid string) *pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods[uid]
}

// TestRefusedAddSurfaces: a netns the proxy cannot enter is refused, in the
// snapshot and in an Add, and the refusal reaches the agent's caller as an
// *handoff.AckError. Needs no privileges.
func TestRefusedAddSurfaces(t *testing.T) {
	h := newHarness(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	h.setEnrolled(enrolledPod("not-a-netns", w))
	p, stop := h.startProxy(nil)
	h.waitConnected()
	if got := uids(p.Pods()); got != "" {
		t.Errorf("Pods() = %q, want none", got)
	}
	if st := h.srv.Stats(); st.Refused != 1 || st.Synced != 1 {
		t.Errorf("Stats() = %+v, want 1 refused, 1 synced", st)
	}

	err = h.add(enrolledPod("also-not", w))
	var refused *handoff.AckError
	if !errors.As(err, &refused) || !strings.Contains(refused.Reason, "enter netns") {
		t.Fatalf("Add() = %v, want an *AckError about entering the netns", err)
	}

	stop()
	waitFor(t, "the proxy to disconnect", func() bool { return h.srv.Stats().Connections == 0 })
	if err := h.add(enrolledPod("x", w)); !errors.Is(err, handoff.ErrNoProxy) {
		t.Errorf("Add() after the proxy stopped = %v, want ErrNoProxy", err)
	}
}

// TestAgentProtocolErrors: the proxy refuses a Hello it does not speak, and
// any message out of order, with an Ack error; it then closes the
// connection, except after a repeated SnapshotSent, which is harmless.
func TestAgentProtocolErrors(t *testing.T) {
	hello := inpodv1.Hello{Version: 1}
	tests := map[string]struct {
		msgs    []inpodv1.Message // the last one is refused
		wantErr string
		closes  bool
	}{
		"unsupported version":  {msgs: []inpodv1.Message{inpodv1.Hello{Version: 2}}, wantErr: "unsupported protocol version 2", closes: true},
		"no hello":             {msgs: []inpodv1.Message{inpodv1.SnapshotSent{}}, wantErr: "expected hello, got snapshotSent", closes: true},
		"second hello":         {msgs: []inpodv1.Message{hello, hello}, wantErr: "unexpected hello", closes: true},
		"ack from agent":       {msgs: []inpodv1.Message{hello, inpodv1.Ack{}}, wantErr: "unexpected ack", closes: true},
		"second snapshot sent": {msgs: []inpodv1.Message{hello, inpodv1.SnapshotSent{}, inpodv1.SnapshotSent{}}, wantErr: "snapshotSent after the snapshot"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			// A hand-driven agent on a socket of its own.
			path := filepath.Join(filepath.Dir(h.records), "raw.sock")
			ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			h.startProxy(func(c *Config) { c.Socket = path })
			ln.SetDeadline(time.Now().Add(testTimeout))
			uc, err := ln.AcceptUnix()
			if err != nil {
				t.Fatal(err)
			}
			c := inpodv1.NewConn(uc)
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			exchange := func(m inpodv1.Message) inpodv1.Ack {
				t.Helper()
				if err := c.Send(m, nil); err != nil {
					t.Fatal(err)
				}
				got, _, err := c.Recv()
				if err != nil {
					t.Fatalf("Recv() after %s: %v", m.Type(), err)
				}
				ack, ok := got.(inpodv1.Ack)
				if !ok {
					t.Fatalf("answer to %s = %#v, want an Ack", m.Type(), got)
				}
				return ack
			}
			for i, m := range tt.msgs {
				ack := exchange(m)
				last := i == len(tt.msgs)-1
				if last && !strings.Contains(ack.Error, tt.wantErr) {
					t.Fatalf("answer to %s = %#v, want an Ack error containing %q", m.Type(), ack, tt.wantErr)
				}
				if !last && ack.Error != "" {
					t.Fatalf("answer to %s = %#v, want Ack{}", m.Type(), ack)
				}
			}
			if !tt.closes {
				if ack := exchange(inpodv1.RemoveWorkload{UID: "unknown"}); ack.Error != "" {
					t.Errorf("Remove of an unknown pod after the refusal = %#v, want Ack{}", ack)
				}
				return
			}
			if m, _, err := c.Recv(); err == nil {
				t.Errorf("Recv() after the refusal = %#v, want the proxy to close", m)
			}
		})
	}
}

// TestListenersInPodNetns: the snapshot and a later Add open the three
// listeners inside each pod's netns, with the mark on each; accepted
// connections are recorded; Remove closes them.
func TestListenersInPodNetns(t *testing.T) {
	h := newHarness(t)
	nsA, nsB := newNetns(t), newNetns(t)
	h.setEnrolled(enrolledPod("a", nsA))
	p, _ := h.startProxy(nil)
	h.waitConnected()
	if got := uids(p.Pods()); got != "a" {
		t.Fatalf("Pods() after the snapshot = %q, want a", got)
	}
	for _, l := range p.podOf("a").listeners {
		mark, err := socketMark(l.ln)
		if err != nil || mark != DefaultMark {
			t.Errorf("%s listener SO_MARK = %#x, %v; want %#x", l.kind, mark, err, DefaultMark)
		}
	}

	h.mustAdd(enrolledPod("b", nsB))
	if got := uids(p.Pods()); got != "a,b" {
		t.Fatalf("Pods() after Add(b) = %q, want a,b", got)
	}
	var clients []*net.TCPConn
	for _, ns := range []*os.File{nsA, nsB} {
		c := mustDialIn(t, ns, hboneAddr)
		got, err := io.ReadAll(c)
		if err != nil || string(got) != HBONEGreeting {
			t.Errorf("HBONE listener sent %q, %v; want %q then EOF", got, err, HBONEGreeting)
		}
		clients = append(clients, c)
	}
	recs := h.waitRecords(2)
	for i, uid := range []string{"a", "b"} {
		rec, c := recs[i], clients[i]
		want := Record{
			Time:      rec.Time,
			Listener:  ListenerHBONE,
			PodUID:    uid,
			PodName:   "pod-" + uid,
			Namespace: "test",
			Peer:      c.LocalAddr().String(),
			Local:     hboneAddr,
			OrigDst:   hboneAddr,
			Mark:      DefaultMark,
		}
		if rec != want {
			t.Errorf("record %d = %+v, want %+v", i, rec, want)
		}
	}

	// The other two listeners accept too (inbound without sk_assign is a
	// loop: recorded and closed).
	for _, addr := range []string{outboundAddr, inboundAddr} {
		c := mustDialIn(t, nsB, addr)
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("read from %s: %v, want EOF", addr, err)
		}
	}
	recs = h.waitRecords(4)
	if recs[2].Listener != ListenerOutbound || recs[3].Listener != ListenerInbound || recs[3].Mark != DefaultMark {
		t.Errorf("records = %+v %+v, want an outbound then an inbound one, marked", recs[2], recs[3])
	}

	h.mustRemove("b", false)
	if got := uids(p.Pods()); got != "a" {
		t.Errorf("Pods() after Remove(b) = %q, want a", got)
	}
	for _, addr := range []string{outboundAddr, inboundAddr, hboneAddr} {
		assertRefused(t, nsB, addr)
	}
	mustDialIn(t, nsA, hboneAddr) // a is still served
}

// TestOutboundProxiedFromPodNetns: a connection to 15001 is recorded with
// the looked-up original destination and proxied there by a marked socket
// created in the pod netns.
func TestOutboundProxiedFromPodNetns(t *testing.T) {
	h := newHarness(t)
	ns := newNetns(t)
	cookie := mustCookie(t, ns)
	// The app's upstream exists only inside the pod netns.
	app := startEcho(t, ns, "127.0.0.1:0")
	type call struct {
		cookie uint64
		peer   netip.AddrPort
	}
	calls := make(chan call, 4)
	lookup := func(c uint64, peer netip.AddrPort) (netip.AddrPort, error) {
		calls <- call{c, peer}
		return app.addr, nil
	}
	const mark = 0x77
	e := enrolledPod("a", ns)
	e.Workload.NetnsCookie = cookie
	h.setEnrolled(e)
	h.startProxy(func(c *Config) { c.Mark = mark; c.OrigDst = lookup })
	h.waitConnected()

	c := mustDialIn(t, ns, outboundAddr)
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "hello")
	roundTrip(t, c, r, strings.Repeat("x", 100<<10))
	if got, want := <-calls, (call{cookie, addrPort(c.LocalAddr())}); got != want {
		t.Errorf("OrigDstLookup(%d, %v), want (%d, %v)", got.cookie, got.peer, want.cookie, want.peer)
	}
	upstream := <-app.peers

	rec := h.waitRecords(1)[0]
	want := Record{
		Time:         rec.Time,
		Listener:     ListenerOutbound,
		PodUID:       "a",
		PodName:      "pod-a",
		Namespace:    "test",
		Peer:         c.LocalAddr().String(),
		Local:        outboundAddr,
		OrigDst:      app.addr.String(),
		Mark:         mark,
		Upstream:     upstream.String(),
		UpstreamMark: mark,
	}
	if rec != want {
		t.Errorf("record = %+v, want %+v", rec, want)
	}
	// Half-close: the proxy passes the client's EOF upstream and back.
	c.CloseWrite()
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("after CloseWrite read %q, %v; want EOF", rest, err)
	}
}

// TestOutboundNotProxied: without a destination, or with one that would
// loop, the connection is recorded and closed.
func TestOutboundNotProxied(t *testing.T) {
	tests := map[string]struct {
		lookup      OrigDstLookup
		wantOrigDst string
		wantErr     string
	}{
		"no lookup": {},
		"lookup fails": {
			lookup: func(uint64, netip.AddrPort) (netip.AddrPort, error) {
				return netip.AddrPort{}, errors.New("not found")
			},
			wantErr: "look up original destination of 127.0.0.1:",
		},
		"destination is the proxy": {
			lookup: func(uint64, netip.AddrPort) (netip.AddrPort, error) {
				return netip.MustParseAddrPort(outboundAddr), nil
			},
			wantOrigDst: outboundAddr,
			wantErr:     "is a proxy listener",
		},
		"destination refuses": {
			lookup: func(uint64, netip.AddrPort) (netip.AddrPort, error) {
				return netip.MustParseAddrPort("127.0.0.1:9"), nil
			},
			wantOrigDst: "127.0.0.1:9",
			wantErr:     "connection refused",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			ns := newNetns(t)
			h.setEnrolled(enrolledPod("a", ns))
			h.startProxy(func(c *Config) { c.OrigDst = tt.lookup })
			h.waitConnected()
			c := mustDialIn(t, ns, outboundAddr)
			if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
				t.Errorf("read = %q, %v; want EOF", got, err)
			}
			rec := h.waitRecords(1)[0]
			if rec.OrigDst != tt.wantOrigDst || !strings.Contains(rec.Error, tt.wantErr) || (tt.wantErr == "") != (rec.Error == "") {
				t.Errorf("record origDst %q error %q, want %q and an error containing %q", rec.OrigDst, rec.Error, tt.wantOrigDst, tt.wantErr)
			}
			if rec.Upstream != "" {
				t.Errorf("record upstream = %q, want none", rec.Upstream)
			}
		})
	}
}

// TestInboundProxiedToApp: an inbound connection whose local address is the
// app's (as after tcx sk_assign) is proxied to the app from the pod netns
// with a marked socket.
func TestInboundProxiedToApp(t *testing.T) {
	h := newHarness(t)
	ns := newNetns(t)
	h.setEnrolled(enrolledPod("a", ns))
	p, _ := h.startProxy(nil)
	h.waitConnected()
	pd := p.podOf("a")
	app := startEcho(t, ns, "127.0.0.1:0")

	// Stand-in for sk_assign: a listener on the app's address in another
	// netns accepts the client's SYN, so the accepted socket's local
	// address is the original destination, as it is on 15006.
	steer := newNetns(t)
	assigned := startAssigned(t, steer, app.addr.String())
	client := mustDialIn(t, steer, app.addr.String())
	conn := <-assigned
	if !pd.track(conn) {
		t.Fatal("pod closed")
	}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	wg.Go(func() { p.handle(ctx, pd, ListenerInbound, conn) })
	defer wg.Wait()

	r := bufio.NewReader(client)
	roundTrip(t, client, r, "inbound")
	upstream := <-app.peers
	rec := h.waitRecords(1)[0]
	want := Record{
		Time:         rec.Time,
		Listener:     ListenerInbound,
		PodUID:       "a",
		PodName:      "pod-a",
		Namespace:    "test",
		Peer:         client.LocalAddr().String(),
		Local:        app.addr.String(),
		OrigDst:      app.addr.String(),
		Upstream:     upstream.String(),
		UpstreamMark: DefaultMark,
	}
	if rec != want {
		t.Errorf("record = %+v, want %+v", rec, want)
	}
	client.Close()
}

// startAssigned listens on addr in ns and yields the accepted connections.
func startAssigned(tb testing.TB, ns *os.File, addr string) <-chan *net.TCPConn {
	tb.Helper()
	var ln *net.TCPListener
	if err := inNetns(ns, func() error {
		l, err := net.Listen("tcp4", addr)
		if err == nil {
			ln = l.(*net.TCPListener)
		}
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	out := make(chan *net.TCPConn, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err == nil {
			out <- c
		}
		close(out)
	}()
	return out
}

// TestRemoveDrainAndDelete: Remove with drain closes the listeners but lets
// an established connection continue; Remove without drain cuts it.
func TestRemoveDrainAndDelete(t *testing.T) {
	h := newHarness(t)
	nsA, nsB := newNetns(t), newNetns(t)
	apps := map[uint64]netip.AddrPort{
		mustCookie(t, nsA): startEcho(t, nsA, "127.0.0.1:0").addr,
		mustCookie(t, nsB): startEcho(t, nsB, "127.0.0.1:0").addr,
	}
	h.setEnrolled(enrolledPod("a", nsA), enrolledPod("b", nsB))
	p, _ := h.startProxy(func(c *Config) {
		c.OrigDst = func(cookie uint64, _ netip.AddrPort) (netip.AddrPort, error) { return apps[cookie], nil }
	})
	h.waitConnected()
	ca, cb := mustDialIn(t, nsA, outboundAddr), mustDialIn(t, nsB, outboundAddr)
	ra, rb := bufio.NewReader(ca), bufio.NewReader(cb)
	roundTrip(t, ca, ra, "a1")
	roundTrip(t, cb, rb, "b1")
	pdA := p.podOf("a")

	h.mustRemove("a", true)
	assertRefused(t, nsA, outboundAddr)
	roundTrip(t, ca, ra, "a2 while draining")
	if pdA.idle() {
		t.Error("drained pod idle while a connection is open")
	}
	if _, err := pdA.netns.Stat(); err != nil {
		t.Errorf("netns of the draining pod: %v, want it open while connections last", err)
	}
	ca.Close()
	waitFor(t, "the drained pod's connections to end", pdA.idle)
	assertNetnsReleased(t, pdA)
	pdB := p.podOf("b")

	h.mustRemove("b", false)
	assertRefused(t, nsB, outboundAddr)
	if line, err := rb.ReadString('\n'); err == nil {
		t.Errorf("read after Remove(b, drain=false) = %q, want the connection closed", line)
	}
	if got := uids(p.Pods()); got != "" {
		t.Errorf("Pods() = %q, want none", got)
	}
	waitFor(t, "the deleted pod's connections to end", pdB.idle)
	assertNetnsReleased(t, pdB)
}

// assertNetnsReleased checks that the proxy closed its descriptor of pd's
// netns, so a deleted pod's namespace can be freed.
func assertNetnsReleased(tb testing.TB, pd *pod) {
	tb.Helper()
	if _, err := pd.netns.Stat(); !errors.Is(err, os.ErrClosed) {
		tb.Errorf("proxy's netns descriptor: Stat() = %v, want it closed", err)
	}
}

// TestProxyAndAgentRestarts: a restarted proxy gets the snapshot again; a
// restarted agent's snapshot releases pods it no longer names.
func TestProxyAndAgentRestarts(t *testing.T) {
	h := newHarness(t)
	ns := newNetns(t)
	h.setEnrolled(enrolledPod("a", ns))
	_, stop := h.startProxy(nil)
	h.waitConnected()
	mustDialIn(t, ns, hboneAddr)
	stop()
	assertRefused(t, ns, hboneAddr) // a stopped proxy closes everything

	waitFor(t, "the first proxy to be gone", func() bool { return h.srv.Stats().Connections == 0 })
	p, _ := h.startProxy(nil)
	h.waitConnected()
	if got := uids(p.Pods()); got != "a" {
		t.Fatalf("Pods() of the second proxy = %q, want a", got)
	}
	mustDialIn(t, ns, hboneAddr)
	if st := h.srv.Stats(); st.Accepted != 2 || st.Synced != 2 || st.Adds != 2 {
		t.Errorf("Stats() = %+v, want 2 accepted, 2 synced, 2 adds", st)
	}

	// The agent restarts and no longer has a: the proxy reconnects and
	// releases it.
	h.stopServer()
	h.setEnrolled()
	h.startServer()
	h.waitConnected()
	waitPods(t, p, "")
	assertRefused(t, ns, hboneAddr)
}

// TestReAdd: an Add for a known UID with the same netns only refreshes the
// metadata; with a new netns it moves the listeners there.
func TestReAdd(t *testing.T) {
	h := newHarness(t)
	ns, ns2 := newNetns(t), newNetns(t)
	h.setEnrolled(enrolledPod("a", ns))
	p, _ := h.startProxy(nil)
	h.waitConnected()
	before := p.podOf("a")

	// Same namespace through another descriptor.
	again, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	e := enrolledPod("a", again)
	e.Workload.Name = "renamed"
	h.mustAdd(e)
	if p.podOf("a") != before {
		t.Error("re-Add with the same netns replaced the pod, want a no-op")
	}
	if ws := p.Pods(); len(ws) != 1 || ws[0].Name != "renamed" {
		t.Errorf("Pods() = %+v, want a renamed", ws)
	}
	mustDialIn(t, ns, hboneAddr)

	h.mustAdd(enrolledPod("a", ns2))
	if p.podOf("a") == before {
		t.Error("Add with a new netns kept the old pod")
	}
	assertRefused(t, ns, hboneAddr)
	mustDialIn(t, ns2, hboneAddr)
	waitFor(t, "the replaced pod to be released", before.idle)
	assertNetnsReleased(t, before)
}

// TestAddRefused: a wrong netns cookie, or a pod already using a proxy
// port, is refused and leaves nothing open.
func TestAddRefused(t *testing.T) {
	tests := map[string]struct {
		setup   func(tb testing.TB, ns *os.File, w *inpodv1.Workload)
		wantErr string
	}{
		"netns cookie mismatch": {
			setup:   func(tb testing.TB, ns *os.File, w *inpodv1.Workload) { w.NetnsCookie = mustCookie(tb, ns) + 1 },
			wantErr: "netns cookie mismatch",
		},
		"port taken by the pod": {
			setup:   func(tb testing.TB, ns *os.File, _ *inpodv1.Workload) { startEcho(tb, ns, hboneAddr) },
			wantErr: "address already in use",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			ns := newNetns(t)
			p, _ := h.startProxy(nil)
			h.waitConnected()
			e := enrolledPod("a", ns)
			tt.setup(t, ns, &e.Workload)
			err := h.add(e)
			var refused *handoff.AckError
			if !errors.As(err, &refused) || !strings.Contains(refused.Reason, tt.wantErr) {
				t.Fatalf("Add() = %v, want an *AckError containing %q", err, tt.wantErr)
			}
			if got := uids(p.Pods()); got != "" {
				t.Errorf("Pods() = %q, want none", got)
			}
			assertRefused(t, ns, outboundAddr)
			assertRefused(t, ns, inboundAddr)
		})
	}
}
