package vipbpf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/weftmesh/weft/bpf/redirect"
)

// Addresses; they exist only inside the test's namespaces. The node netns
// holds the backend (on its lo) and one veth to each of the pod and the
// other (not enrolled) netns.
var (
	vip       = netip.MustParseAddrPort("10.99.0.1:80")
	backendAP = netip.MustParseAddrPort("10.251.9.1:8080")
	podGW     = netip.MustParseAddr("10.251.0.1")
	podIP     = netip.MustParseAddr("10.251.0.2")
	otherGW   = netip.MustParseAddr("10.251.1.1")
	otherIP   = netip.MustParseAddr("10.251.1.2")
)

// env is the topology shared by the subtests: netns, the backend, weft's
// programs (loaded, pod enrolled, attached per subtest), the rewriter
// (loaded, VIP configured, attached per subtest) and the proxy stand-in.
type env struct {
	node, pod, other netNS
	weft             *redirect.Objects
	vip              *Objects
	backend          *backendServer
	proxy            *proxy
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{node: newNetNS(t), pod: newNetNS(t), other: newNetNS(t)}
	run(t, "ip", "-n", e.node.name, "addr", "add", backendAP.Addr().String()+"/32", "dev", "lo")
	for i, peer := range []struct {
		ns     netNS
		gw, ip netip.Addr
	}{{e.pod, podGW, podIP}, {e.other, otherGW, otherIP}} {
		veth := fmt.Sprint("veth", i)
		run(t, "ip", "-n", e.node.name, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", peer.ns.name)
		run(t, "ip", "-n", e.node.name, "addr", "add", peer.gw.String()+"/24", "dev", veth)
		run(t, "ip", "-n", e.node.name, "link", "set", veth, "up")
		run(t, "ip", "-n", peer.ns.name, "addr", "add", peer.ip.String()+"/24", "dev", "eth0")
		run(t, "ip", "-n", peer.ns.name, "link", "set", "eth0", "up")
		run(t, "ip", "-n", peer.ns.name, "route", "add", "default", "via", peer.gw.String())
	}
	e.backend = serveBackend(t, e.node)

	var err error
	if e.weft, err = redirect.Load(redirect.Options{}); err != nil {
		t.Fatalf("load weft: %v", err)
	}
	t.Cleanup(func() { e.weft.Close() })
	podCookie := e.pod.cookie(t)
	if err := e.weft.Enroll(podCookie, redirect.PodInfo{IP: podIP}); err != nil {
		t.Fatal(err)
	}
	e.proxy = startProxy(t, e.pod, e.weft, podCookie)

	if e.vip, err = Load(); err != nil {
		t.Fatalf("load rewriter: %v", err)
	}
	t.Cleanup(func() { e.vip.Close() })
	if err := e.vip.SetBackend(vip, backendAP); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestCoexistWithWeft is weft issue 3's acceptance item "another cgroup
// connect4 program (a Service-VIP rewriter) attached before and after weft's:
// both keep working". Each subtest attaches both to a fresh test cgroup in
// one order; an app in the enrolled pod connects to the VIP and must reach
// the backend through weft's proxy, and an app in a netns that is not
// enrolled, in the same cgroup, must reach the backend directly.
func TestCoexistWithWeft(t *testing.T) {
	requirePrivileged(t)
	e := newEnv(t)
	vipID, err := e.vip.ProgramID()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		vipFirst bool
		// wantOrig is the original destination weft records (what the proxy
		// looks up), wantPeer what the app's getpeername reports (weft's
		// getpeername4 hook answers with the recorded destination; the
		// rewriter has no such hook).
		wantOrig, wantPeer netip.AddrPort
	}{
		{
			// The rewriter runs first and rewrites VIP → backend; weft's
			// connect4 then sees the backend, records it and redirects to
			// 127.0.0.1:15001. The proxy's upstream dial to the backend is
			// no VIP (the rewriter passes it) and is marked (weft skips it).
			name: "rewriter attached before weft", vipFirst: true,
			wantOrig: backendAP, wantPeer: backendAP,
		},
		{
			// weft runs first: it records the VIP and redirects to
			// 127.0.0.1:15001, which the rewriter passes (no VIP). The
			// proxy's upstream dial to the VIP is marked, so weft skips
			// it, and the rewriter then rewrites it to the backend.
			name: "rewriter attached after weft", vipFirst: false,
			wantOrig: vip, wantPeer: vip,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg := newCgroup(t)
			attachVIP := func() {
				l, err := e.vip.Attach(cg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			}
			if tt.vipFirst {
				attachVIP()
			}
			weftLinks, err := e.weft.AttachCgroup(cg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := e.weft.DetachCgroup(cg); err != nil {
					t.Errorf("detach weft: %v", err)
				}
			})
			if !tt.vipFirst {
				attachVIP()
			}

			// Exactly the two connect4 programs, in the intended order
			// (the kernel runs a cgroup's programs in attach order).
			weftIDs := linkProgramIDs(t, weftLinks)
			progs := connect4Programs(t, cg)
			wantVIPAt := 1
			if tt.vipFirst {
				wantVIPAt = 0
			}
			if len(progs) != 2 || progs[wantVIPAt] != vipID || !slices.Contains(weftIDs, progs[1-wantVIPAt]) {
				t.Fatalf("connect4 programs at the test cgroup = %v, want 2 with the rewriter (%d) at index %d and weft's (one of %v) at the other", progs, vipID, wantVIPAt, weftIDs)
			}

			e.proxy.use(startChild(t, e.pod, cg))
			app := startChild(t, e.pod, cg)
			otherApp := startChild(t, e.other, cg)
			weftBefore, vipBefore := weftCounters(t, e.weft), vipCounters(t, e.vip)
			backendBefore := len(e.backend.peers())

			// The enrolled pod: both programs act.
			resp := app.dial(t, vip)
			if resp.Line != "backend" {
				t.Errorf("pod: dial %s: server said %q, want %q", vip, resp.Line, "backend")
			}
			if resp.Peer != tt.wantPeer.String() {
				t.Errorf("pod: dial %s: getpeername = %s, want %s", vip, resp.Peer, tt.wantPeer)
			}
			recs := e.proxy.records()
			if len(recs) != 1 || recs[0] != (record{Orig: tt.wantOrig}) {
				t.Errorf("proxy records = %+v, want exactly one with original destination %s", recs, tt.wantOrig)
			}
			t.Logf("weft recorded original destination %v", recs)

			// A netns that is not enrolled: the rewriter alone.
			resp = otherApp.dial(t, vip)
			if resp.Line != "backend" || resp.Peer != backendAP.String() {
				t.Errorf("not enrolled: dial %s: server said %q, getpeername %s; want %q, %s", vip, resp.Line, resp.Peer, "backend", backendAP)
			}
			if n := len(e.proxy.records()); n != 1 {
				t.Errorf("proxy records after the dial from the netns that is not enrolled = %d, want still 1", n)
			}

			// The backend saw the proxy's upstream (from the pod netns),
			// then the other netns directly: no loop, no extra hop.
			if got, want := e.backend.peers()[backendBefore:], []netip.Addr{podIP, otherIP}; !slices.Equal(got, want) {
				t.Errorf("backend connections from %v, want %v", got, want)
			}
			// weft: the app's connect redirected, the proxy's marked
			// upstream skipped, nothing for the netns that is not
			// enrolled. Rewriter: the VIP connects of the app (order 1) or
			// of the proxy (order 2), and of the other netns, rewritten;
			// the one non-VIP connect it sees (the proxy's dial to the
			// backend, or the app's already redirected to 127.0.0.1:15001)
			// passed.
			if d, want := diffWeft(weftCounters(t, e.weft), weftBefore), (redirect.Counters{Redirected: 1, SkippedMarked: 1}); d != want {
				t.Errorf("weft counter deltas = %+v, want %+v", d, want)
			}
			if d, want := diffVIP(vipCounters(t, e.vip), vipBefore), (Counters{Rewritten: 2, Passed: 1}); d != want {
				t.Errorf("rewriter counter deltas = %+v, want %+v", d, want)
			}
		})
	}
}

func connect4Programs(tb testing.TB, cgroup string) []ebpf.ProgramID {
	tb.Helper()
	f, err := os.Open(cgroup)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupInet4Connect})
	if err != nil {
		tb.Fatalf("query connect4 programs at %s: %v", cgroup, err)
	}
	var ids []ebpf.ProgramID
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids
}

func linkProgramIDs(tb testing.TB, links []link.Link) []ebpf.ProgramID {
	tb.Helper()
	var ids []ebpf.ProgramID
	for _, l := range links {
		info, err := l.Info()
		if err != nil {
			tb.Fatalf("link info: %v", err)
		}
		ids = append(ids, info.Program)
	}
	return ids
}

func weftCounters(tb testing.TB, o *redirect.Objects) redirect.Counters {
	tb.Helper()
	c, err := o.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func vipCounters(tb testing.TB, o *Objects) Counters {
	tb.Helper()
	c, err := o.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func diffVIP(b, a Counters) Counters {
	return Counters{Rewritten: b.Rewritten - a.Rewritten, Passed: b.Passed - a.Passed}
}

// diffWeft returns b - a for the outbound counters this test can move.
func diffWeft(b, a redirect.Counters) redirect.Counters {
	return redirect.Counters{
		Redirected:      b.Redirected - a.Redirected,
		SkippedUDP:      b.SkippedUDP - a.SkippedUDP,
		SkippedLoopback: b.SkippedLoopback - a.SkippedLoopback,
		SkippedSelf:     b.SkippedSelf - a.SkippedSelf,
		SkippedMarked:   b.SkippedMarked - a.SkippedMarked,
		SkippedBoundDev: b.SkippedBoundDev - a.SkippedBoundDev,
		SkippedIPv6:     b.SkippedIPv6 - a.SkippedIPv6,
		Errors:          b.Errors - a.Errors,
	}
}

// backendServer listens on backendAP in ns, answers every connection with
// "backend\n" and closes it, and remembers the source address of each.
type backendServer struct {
	mu      sync.Mutex // guards peerIPs
	peerIPs []netip.Addr
}

func serveBackend(tb testing.TB, ns netNS) *backendServer {
	tb.Helper()
	s := &backendServer{}
	ln := listen(tb, ns, backendAP)
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.peerIPs = append(s.peerIPs, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
			s.mu.Unlock()
			io.WriteString(c, "backend\n")
			c.Close()
		}
	})
	return s
}

func (s *backendServer) peers() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.peerIPs)
}

// listen opens a plain TCP listener (no MPTCP) on addr in ns.
func listen(tb testing.TB, ns netNS, addr netip.AddrPort) net.Listener {
	tb.Helper()
	var ln net.Listener
	ns.do(tb, func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp4", addr.String())
		return err
	})
	return ln
}

// record is what the proxy stand-in learnt about one accepted connection.
type record struct {
	Orig netip.AddrPort // original destination from weft's orig_dst map
	Err  string         // lookup or upstream dial failure
}

// proxy stands in for ztunnel's outbound listener: it listens on
// 127.0.0.1:15001 in the pod netns (a socket created on a thread there),
// looks up each accepted connection's original destination in weft's map,
// records it, and proxies to it over a socket marked with
// redirect.SocketMark. That upstream socket is created by a child in the
// test cgroup and the pod netns (use), as ztunnel's sockets are in the
// cgroup the programs are attached to in production (the root), so the
// rewriter acts on it.
type proxy struct {
	weft   *redirect.Objects
	cookie uint64 // the pod netns

	mu       sync.Mutex // guards the fields below
	upstream *child
	recs     []record
}

func startProxy(tb testing.TB, ns netNS, weft *redirect.Objects, cookie uint64) *proxy {
	tb.Helper()
	p := &proxy{weft: weft, cookie: cookie}
	ln := listen(tb, ns, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), redirect.OutboundPort))
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.handle(c) })
		}
	})
	return p
}

// use makes upstream the dialer of new upstream connections and forgets
// the records.
func (p *proxy) use(upstream *child) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upstream, p.recs = upstream, nil
}

func (p *proxy) records() []record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.recs)
}

func (p *proxy) handle(down net.Conn) {
	defer down.Close()
	peer := down.RemoteAddr().(*net.TCPAddr).AddrPort()
	orig, err := p.weft.LookupOrigDst(p.cookie, peer.Addr(), peer.Port())
	p.mu.Lock()
	upstream := p.upstream
	p.recs = append(p.recs, record{Orig: orig})
	idx := len(p.recs) - 1
	p.mu.Unlock()
	fail := func(err error) {
		p.mu.Lock()
		if idx < len(p.recs) {
			p.recs[idx].Err = err.Error()
		}
		p.mu.Unlock()
	}
	if err != nil {
		fail(err)
		return
	}
	if upstream == nil {
		fail(errors.New("no upstream dialer"))
		return
	}
	up, err := upstream.dialFD(orig, redirect.SocketMark)
	if err != nil {
		fail(err)
		return
	}
	defer up.Close()
	// A plain read/write loop (the wrappers hide ReadFrom/WriteTo): a
	// TCPConn-to-TCPConn io.Copy would splice through pooled pipes, which
	// outlive the test and trip the descriptor-leak check.
	done := make(chan struct{})
	go func() {
		io.Copy(struct{ io.Writer }{up}, struct{ io.Reader }{down})
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(struct{ io.Writer }{down}, struct{ io.Reader }{up})
	down.(*net.TCPConn).CloseWrite()
	<-done
}
