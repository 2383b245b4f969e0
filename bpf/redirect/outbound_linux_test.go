package redirect

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// outboundEnv is a pod netns with the outbound programs attached at a test
// cgroup, a fake ztunnel on 127.0.0.1:15001 that reports the original
// destination it looked up, and real servers at the destinations.
type outboundEnv struct {
	pair
	o      *Objects
	cgroup string
	cookie uint64

	mu     sync.Mutex // guards lookup
	lookup func(netnsCookie uint64, ip netip.Addr, port uint16) (netip.AddrPort, error)
}

// setLookup changes how the fake ztunnel finds original destinations.
func (e *outboundEnv) setLookup(f func(uint64, netip.Addr, uint16) (netip.AddrPort, error)) {
	e.mu.Lock()
	e.lookup = f
	e.mu.Unlock()
}

func newOutboundEnv(t *testing.T, opts Options) *outboundEnv {
	t.Helper()
	e := &outboundEnv{pair: newPair(t), cgroup: newCgroup(t)}
	e.o = mustLoad(t, opts)
	e.lookup = e.o.LookupOrigDst
	if _, err := e.o.AttachCgroup(e.cgroup); err != nil {
		t.Fatal(err)
	}
	e.cookie = e.pod.cookie(t)
	serve(t, e.pod, "tcp4", "127.0.0.1:15001", e.ztunnelBanner)
	serve(t, e.node, "tcp4", nodeIP.String()+":80", fixed("node"))
	serveUDP(t, e.node, nodeIP.String()+":53", "udp-node ")
	serve(t, e.pod, "tcp4", podIP.String()+":8080", fixed("self"))
	serve(t, e.pod, "tcp6", "[::1]:9000", fixed("v6"))
	return e
}

// ztunnelBanner is what the fake ztunnel answers: the original destination
// of the accepted connection, found by its peer address.
func (e *outboundEnv) ztunnelBanner(c net.Conn) string {
	peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	e.mu.Lock()
	lookup := e.lookup
	e.mu.Unlock()
	orig, err := lookup(e.cookie, peer.Addr(), peer.Port())
	if err != nil {
		return "ztunnel orig=none"
	}
	return "ztunnel orig=" + orig.String()
}

func (e *outboundEnv) enroll(t *testing.T) {
	t.Helper()
	if err := e.o.Enroll(e.cookie, PodInfo{PodID: 7, IP: podIP}); err != nil {
		t.Fatal(err)
	}
}

var dst80 = netip.AddrPortFrom(nodeIP, 80).String()

// TestOutbound: connects from an enrolled pod netns (by a process in the
// cgroup the programs are attached to) go to ztunnel, which recovers the
// original destination, while the app still sees that destination; every
// skip rule leaves the connection alone, and each case moves exactly the
// expected counter.
func TestOutbound(t *testing.T) {
	requirePrivileged(t)
	e := newOutboundEnv(t, Options{})
	e.enroll(t)
	app := startChild(t, e.pod, e.cgroup)

	tests := []struct {
		name      string
		req       childReq
		wantLine  string
		wantPeer  string // getpeername in the app
		wantLocal string // IP part of getsockname in the app, if set
		count     func(Counters) uint64
	}{
		{
			name:     "tcp4 is redirected, original destination recovered",
			req:      childReq{Net: "tcp4", Addr: dst80},
			wantLine: "ztunnel orig=" + dst80, wantPeer: dst80, wantLocal: podIP.String(),
			count: func(c Counters) uint64 { return c.Redirected },
		},
		{
			name:     "v4-mapped tcp6 is redirected",
			req:      childReq{Net: "tcp6", Addr: "[::ffff:" + nodeIP.String() + "]:80"},
			wantLine: "ztunnel orig=" + dst80, wantPeer: "[::ffff:" + nodeIP.String() + "]:80", wantLocal: "::ffff:" + podIP.String(),
			count: func(c Counters) uint64 { return c.Redirected },
		},
		{
			name:     "udp connect is untouched",
			req:      childReq{Net: "udp4", Addr: netip.AddrPortFrom(nodeIP, 53).String()},
			wantLine: "udp-node ping", wantPeer: netip.AddrPortFrom(nodeIP, 53).String(),
			count: func(c Counters) uint64 { return c.SkippedUDP },
		},
		{
			name:     "socket with ztunnel's mark is untouched",
			req:      childReq{Net: "tcp4", Addr: dst80, Mark: SocketMark},
			wantLine: "node", wantPeer: dst80,
			count: func(c Counters) uint64 { return c.SkippedMarked },
		},
		{
			name:     "socket with another mark is redirected",
			req:      childReq{Net: "tcp4", Addr: dst80, Mark: 0x1000},
			wantLine: "ztunnel orig=" + dst80, wantPeer: dst80,
			count: func(c Counters) uint64 { return c.Redirected },
		},
		{
			name:     "socket bound to a device is untouched",
			req:      childReq{Net: "tcp4", Addr: dst80, BindDev: "eth0"},
			wantLine: "node", wantPeer: dst80,
			count: func(c Counters) uint64 { return c.SkippedBoundDev },
		},
		{
			name:     "loopback destination is untouched",
			req:      childReq{Net: "tcp4", Addr: "127.0.0.1:15001"},
			wantLine: "ztunnel orig=none", wantPeer: "127.0.0.1:15001",
			count: func(c Counters) uint64 { return c.SkippedLoopback },
		},
		{
			name:     "the pod's own IP is untouched",
			req:      childReq{Net: "tcp4", Addr: podIP.String() + ":8080"},
			wantLine: "self", wantPeer: podIP.String() + ":8080",
			count: func(c Counters) uint64 { return c.SkippedSelf },
		},
		{
			name:     "mptcp is redirected",
			req:      childReq{Net: "mptcp4", Addr: dst80},
			wantLine: "ztunnel orig=" + dst80, wantPeer: dst80,
			count: func(c Counters) uint64 { return c.Redirected },
		},
		{
			name:     "mptcp with ztunnel's mark is untouched",
			req:      childReq{Net: "mptcp4", Addr: dst80, Mark: SocketMark},
			wantLine: "node", wantPeer: dst80,
			count: func(c Counters) uint64 { return c.SkippedMarked },
		},
		{
			name:     "mptcp bound to a device is untouched",
			req:      childReq{Net: "mptcp4", Addr: dst80, BindDev: "eth0"},
			wantLine: "node", wantPeer: dst80,
			count: func(c Counters) uint64 { return c.SkippedBoundDev },
		},
		{
			name:     "pure ipv6 is untouched",
			req:      childReq{Net: "tcp6", Addr: "[::1]:9000"},
			wantLine: "v6", wantPeer: "[::1]:9000",
			count: func(c Counters) uint64 { return c.SkippedIPv6 },
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := mustCounters(t, e.o)
			tt.req.Op, tt.req.ID = "dial", fmt.Sprint("c", i)
			resp := app.mustDo(t, tt.req)
			defer app.do(t, childReq{Op: "close", ID: tt.req.ID})
			if resp.Line != tt.wantLine {
				t.Errorf("dial %s: server said %q, want %q", tt.req.Addr, resp.Line, tt.wantLine)
			}
			if resp.Peer != tt.wantPeer {
				t.Errorf("dial %s: getpeername = %s, want %s", tt.req.Addr, resp.Peer, tt.wantPeer)
			}
			if tt.wantLocal != "" {
				local, err := netip.ParseAddrPort(resp.Local)
				if err != nil || local.Addr().String() != tt.wantLocal {
					t.Errorf("dial %s: getsockname = %s, want %s:<port>", tt.req.Addr, resp.Local, tt.wantLocal)
				}
			}
			if tt.req.Net != "udp4" {
				if r := app.mustDo(t, childReq{Op: "echo", ID: tt.req.ID, Msg: "hello"}); r.Line != "hello" {
					t.Errorf("echo over %s = %q, want %q", tt.req.Addr, r.Line, "hello")
				}
			}
			d := mustCounters(t, e.o).diff(before)
			if n := tt.count(d); n != 1 {
				t.Errorf("counter delta = %d, want 1 (all deltas %+v)", n, d)
			}
			if d.Errors != 0 {
				t.Errorf("errors counter grew by %d", d.Errors)
			}
		})
	}
}

// TestOutboundNotEnrolled: the same programs leave a netns alone that is not
// in mesh_netns, even though it has a listener on 15001.
func TestOutboundNotEnrolled(t *testing.T) {
	requirePrivileged(t)
	e := newOutboundEnv(t, Options{})
	e.enroll(t) // the pod is enrolled; "other" is not
	other := newNetNS(t)
	run(t, "ip", "-n", other.name, "addr", "add", "10.99.0.1/32", "dev", "lo")
	serve(t, other, "tcp4", "10.99.0.1:80", fixed("direct"))
	serve(t, other, "tcp4", "127.0.0.1:15001", fixed("redirected"))
	app := startChild(t, other, e.cgroup)

	before := mustCounters(t, e.o)
	resp := app.mustDo(t, childReq{Op: "dial", ID: "c", Net: "tcp4", Addr: "10.99.0.1:80"})
	if resp.Line != "direct" || resp.Peer != "10.99.0.1:80" {
		t.Errorf("dial from a netns that is not enrolled: server %q, peer %s; want \"direct\", 10.99.0.1:80", resp.Line, resp.Peer)
	}
	if d := mustCounters(t, e.o).diff(before); d != (Counters{}) {
		t.Errorf("counters moved for a netns that is not enrolled: %+v", d)
	}
}

// TestOutboundEnrollLifecycle: a process that connected before enrollment
// keeps its connection; its new connections are redirected after
// enrollment; unenrollment stops redirecting new ones without cutting the
// redirected one.
func TestOutboundEnrollLifecycle(t *testing.T) {
	requirePrivileged(t)
	e := newOutboundEnv(t, Options{})
	app := startChild(t, e.pod, e.cgroup)

	if r := app.mustDo(t, childReq{Op: "dial", ID: "before", Net: "tcp4", Addr: dst80}); r.Line != "node" {
		t.Fatalf("before enrollment: server %q, want \"node\"", r.Line)
	}
	e.enroll(t)
	if r := app.mustDo(t, childReq{Op: "echo", ID: "before", Msg: "still here"}); r.Line != "still here" {
		t.Errorf("connection from before enrollment: echo = %q, want %q", r.Line, "still here")
	}
	if r := app.mustDo(t, childReq{Op: "dial", ID: "during", Net: "tcp4", Addr: dst80}); r.Line != "ztunnel orig="+dst80 {
		t.Errorf("after enrollment: server %q, want ztunnel", r.Line)
	}
	if err := e.o.Unenroll(e.cookie); err != nil {
		t.Fatal(err)
	}
	if err := e.o.Unenroll(e.cookie); err != nil {
		t.Errorf("second Unenroll = %v, want nil (idempotent)", err)
	}
	if r := app.mustDo(t, childReq{Op: "dial", ID: "after", Net: "tcp4", Addr: dst80}); r.Line != "node" {
		t.Errorf("after unenrollment: server %q, want \"node\"", r.Line)
	}
	for _, id := range []string{"before", "during"} {
		if r := app.mustDo(t, childReq{Op: "echo", ID: id, Msg: "bye"}); r.Line != "bye" {
			t.Errorf("connection %q after unenrollment: echo = %q, want \"bye\"", id, r.Line)
		}
	}
}

// TestOutboundCloseDetaches: without a PinDir, Close detaches the programs.
func TestOutboundCloseDetaches(t *testing.T) {
	requirePrivileged(t)
	cg := newCgroup(t)
	o := mustLoad(t, Options{})
	if _, err := o.AttachCgroup(cg); err != nil {
		t.Fatal(err)
	}
	if n := countCgroupProgs(t, cg, ebpf.AttachCGroupInet4Connect); n != 1 {
		t.Fatalf("connect4 programs at test cgroup = %d, want 1", n)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	for _, h := range cgroupHooks {
		if n := countCgroupProgs(t, cg, h.attach); n != 0 {
			t.Errorf("%s programs after Close = %d, want 0", h.name, n)
		}
	}
}

func countCgroupProgs(tb testing.TB, cgroup string, attach ebpf.AttachType) int {
	tb.Helper()
	f := openDir(tb, cgroup)
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: attach})
	if err != nil {
		tb.Fatalf("query %v programs at %s: %v", attach, cgroup, err)
	}
	return len(res.Programs)
}
