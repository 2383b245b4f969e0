package state

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/weftmesh/weft/internal/spiffe"
)

func sa(name string) spiffe.ID {
	return spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: name}
}

// policySnapshot holds one workload per destination ServiceAccount of the
// Authorize table, and the policies that select them.
func policySnapshot(tb testing.TB, mode string) *Snapshot {
	tb.Helper()
	var ws []Workload
	for i, name := range []string{"d", "e", "f", "g", "h", "hm", "i", "j", "n", "u"} {
		ws = append(ws, Workload{
			UID: "uid-" + name, Namespace: "shop", Name: name + "-0", ServiceAccount: name,
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})},
		})
	}
	src := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, sa(n).String())
		}
		return out
	}
	tcp := func(ports ...uint16) Rule { return Rule{Kind: KindTCPRoute, Name: "tcp", Ports: ports} }
	pol := func(name, dst string, sources []string, rules ...Rule) Policy {
		return Policy{Name: "shop/" + name, Destination: Destination{Namespace: "shop", ServiceAccount: dst}, Sources: sources, Rules: rules}
	}
	broken := pol("broken", "i", src("a"), tcp())
	broken.Invalid = `unsupported rule kind "UDPRoute"`
	brokenJ := pol("broken-j", "j", src("b"), tcp())
	brokenJ.Invalid = "route shop/gone not found"
	return build(tb, Snapshot{
		PolicyMode: mode,
		Workloads:  ws,
		Policies: []Policy{
			pol("allow-a", "d", src("a"), tcp(8080)),
			pol("allow-c", "d", src("c", "x"), tcp(9090), tcp(9091)),
			pol("any-port", "f", src("a"), tcp()),
			pol("group-all", "g", src("a"), Rule{Kind: KindHTTPRouteGroup, Name: "all"}),
			pol("http-only", "h", src("a"), Rule{Kind: KindHTTPRouteGroup, Name: "get", HTTP: true}),
			pol("http-and-tcp", "hm", src("a"), Rule{Kind: KindHTTPRouteGroup, Name: "get", HTTP: true}, tcp(5000)),
			broken,
			brokenJ,
			pol("allow-j", "j", src("a"), tcp()),
			pol("no-sources", "n", nil, tcp()),
			pol("future", "u", src("a"), Rule{Kind: "GRPCRoute", Name: "rpc"}),
		},
	})
}

func TestAuthorize(t *testing.T) {
	type want struct {
		allowed bool
		policy  string
		reason  string
	}
	both := func(w want) [2]want { return [2]want{w, w} }
	a := sa("a")
	tests := []struct {
		name string
		src  spiffe.ID
		dst  string // ServiceAccount of the destination; "" for nil, "?" for one outside the snapshot
		port uint16
		want [2]want // permissive, strict
	}{
		{
			name: "destination no policy names, mesh client", src: a, dst: "e", port: 8080,
			want: [2]want{
				{allowed: true, reason: "permissive mode: no TrafficTarget selects shop/sa/e"},
				{reason: "strict mode: no TrafficTarget selects shop/sa/e, so spiffe://cluster.local/ns/shop/sa/a may not reach it on port 8080"},
			},
		},
		{
			name: "destination no policy names, plaintext client", dst: "e", port: 8080,
			want: [2]want{
				{allowed: true, reason: "permissive mode: no TrafficTarget selects shop/sa/e"},
				{reason: "strict mode: plaintext connection refused: no TrafficTarget selects shop/sa/e"},
			},
		},
		{
			name: "destination outside the snapshot", src: a, dst: "?", port: 80,
			want: [2]want{
				{allowed: true, reason: "permissive mode: no TrafficTarget selects other/sa/z"},
				{reason: "strict mode: no TrafficTarget selects other/sa/z, so spiffe://cluster.local/ns/shop/sa/a may not reach it on port 80"},
			},
		},
		{
			name: "listed source on listed port", src: a, dst: "d", port: 8080,
			want: both(want{allowed: true, policy: "shop/allow-a", reason: "allowed by TrafficTarget shop/allow-a"}),
		},
		{
			name: "listed source on a port no rule lists", src: a, dst: "d", port: 9090,
			want: both(want{policy: "shop/allow-a,shop/allow-c", reason: "no TrafficTarget allows spiffe://cluster.local/ns/shop/sa/a to reach shop/sa/d on port 9090 (selected by shop/allow-a, shop/allow-c)"}),
		},
		{
			name: "unlisted source", src: sa("b"), dst: "d", port: 8080,
			want: both(want{policy: "shop/allow-a,shop/allow-c", reason: "no TrafficTarget allows spiffe://cluster.local/ns/shop/sa/b to reach shop/sa/d on port 8080 (selected by shop/allow-a, shop/allow-c)"}),
		},
		{
			name: "plaintext client of a selected destination", dst: "d", port: 8080,
			want: both(want{policy: "shop/allow-a,shop/allow-c", reason: "plaintext connection refused: shop/sa/d is selected by shop/allow-a, shop/allow-c"}),
		},
		{
			name: "same names in another trust domain", src: spiffe.ID{TrustDomain: "other.example", Namespace: "shop", ServiceAccount: "a"}, dst: "d", port: 8080,
			want: both(want{policy: "shop/allow-a,shop/allow-c", reason: "no TrafficTarget allows spiffe://other.example/ns/shop/sa/a to reach shop/sa/d on port 8080 (selected by shop/allow-a, shop/allow-c)"}),
		},
		{
			name: "sources are ORed, rules too", src: sa("x"), dst: "d", port: 9091,
			want: both(want{allowed: true, policy: "shop/allow-c", reason: "allowed by TrafficTarget shop/allow-c"}),
		},
		{
			name: "policies are additive", src: sa("c"), dst: "d", port: 9090,
			want: both(want{allowed: true, policy: "shop/allow-c", reason: "allowed by TrafficTarget shop/allow-c"}),
		},
		{
			name: "rule without ports covers port 1", src: a, dst: "f", port: 1,
			want: both(want{allowed: true, policy: "shop/any-port", reason: "allowed by TrafficTarget shop/any-port"}),
		},
		{
			name: "rule without ports covers port 65535", src: a, dst: "f", port: 65535,
			want: both(want{allowed: true, policy: "shop/any-port", reason: "allowed by TrafficTarget shop/any-port"}),
		},
		{
			name: "route group without HTTP matches", src: a, dst: "g", port: 8080,
			want: both(want{allowed: true, policy: "shop/group-all", reason: "allowed by TrafficTarget shop/group-all"}),
		},
		{
			name: "HTTP rule fails closed", src: a, dst: "h", port: 8080,
			want: both(want{policy: "shop/http-only", reason: "HTTP rules of shop/http-only need a waypoint: spiffe://cluster.local/ns/shop/sa/a may not reach shop/sa/h on port 8080 without one (selected by shop/http-only)"}),
		},
		{
			name: "HTTP rule beside a TCP rule, TCP port", src: a, dst: "hm", port: 5000,
			want: both(want{allowed: true, policy: "shop/http-and-tcp", reason: "allowed by TrafficTarget shop/http-and-tcp"}),
		},
		{
			name: "HTTP rule beside a TCP rule, other port", src: a, dst: "hm", port: 8080,
			want: both(want{policy: "shop/http-and-tcp", reason: "HTTP rules of shop/http-and-tcp need a waypoint: spiffe://cluster.local/ns/shop/sa/a may not reach shop/sa/hm on port 8080 without one (selected by shop/http-and-tcp)"}),
		},
		{
			name: "invalid policy selects but allows nothing", src: a, dst: "i", port: 8080,
			want: both(want{policy: "shop/broken", reason: `no TrafficTarget allows spiffe://cluster.local/ns/shop/sa/a to reach shop/sa/i on port 8080 (selected by shop/broken; shop/broken is invalid and allows nothing: unsupported rule kind "UDPRoute")`}),
		},
		{
			name: "invalid policy selects, plaintext", dst: "i", port: 8080,
			want: both(want{policy: "shop/broken", reason: "plaintext connection refused: shop/sa/i is selected by shop/broken"}),
		},
		{
			name: "valid policy beside an invalid one allows", src: a, dst: "j", port: 8080,
			want: both(want{allowed: true, policy: "shop/allow-j", reason: "allowed by TrafficTarget shop/allow-j"}),
		},
		{
			name: "source only an invalid policy lists", src: sa("b"), dst: "j", port: 8080,
			want: both(want{policy: "shop/broken-j,shop/allow-j", reason: "no TrafficTarget allows spiffe://cluster.local/ns/shop/sa/b to reach shop/sa/j on port 8080 (selected by shop/broken-j, shop/allow-j; shop/broken-j is invalid and allows nothing: route shop/gone not found)"}),
		},
		{
			name: "policy without sources", src: a, dst: "n", port: 8080,
			want: both(want{policy: "shop/no-sources", reason: "no TrafficTarget allows spiffe://cluster.local/ns/shop/sa/a to reach shop/sa/n on port 8080 (selected by shop/no-sources)"}),
		},
		{
			name: "rule kind this version does not know", src: a, dst: "u", port: 8080,
			want: both(want{policy: "shop/future", reason: `rule kind "GRPCRoute" of shop/future is not supported: spiffe://cluster.local/ns/shop/sa/a may not reach shop/sa/u on port 8080 (selected by shop/future)`}),
		},
		{
			name: "no destination workload", src: a, dst: "", port: 8080,
			want: both(want{reason: "destination is not a workload of this node's snapshot"}),
		},
	}
	for mi, mode := range []string{ModePermissive, ModeStrict} {
		s := policySnapshot(t, mode)
		for _, tt := range tests {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				var dst *Workload
				switch tt.dst {
				case "":
				case "?":
					dst = &Workload{Namespace: "other", Name: "z-0", ServiceAccount: "z"}
				default:
					for i := range s.Workloads {
						if s.Workloads[i].ServiceAccount == tt.dst {
							dst = &s.Workloads[i]
						}
					}
					if dst == nil {
						t.Fatalf("no workload with service account %q", tt.dst)
					}
				}
				got := s.Authorize(tt.src, dst, tt.port)
				w := tt.want[mi]
				if got.Allowed != w.allowed || got.Policy != w.policy || got.Reason != w.reason {
					t.Errorf("Authorize(%q, %s, %d) =\n  %s\nwant\n  %s", tt.src, tt.dst, tt.port,
						fmt.Sprintf("{Allowed:%v Policy:%q Reason:%q}", got.Allowed, got.Policy, got.Reason),
						fmt.Sprintf("{Allowed:%v Policy:%q Reason:%q}", w.allowed, w.policy, w.reason))
				}
			})
		}
	}
}

// The default mode, "", is permissive.
func TestAuthorizeDefaultModeIsPermissive(t *testing.T) {
	s := policySnapshot(t, "")
	if d := s.Authorize(spiffe.ID{}, s.WorkloadByUID("uid-e"), 80); !d.Allowed {
		t.Errorf("Authorize(plaintext, unselected) with mode \"\" = %+v, want allowed", d)
	}
}

// Per connection decisions must not allocate when they allow: they run for
// every accepted and every dialled connection.
func TestDecisionsDoNotAllocate(t *testing.T) {
	ps := policySnapshot(t, ModePermissive)
	d := ps.WorkloadByUID("uid-d")
	e := ps.WorkloadByUID("uid-e")
	ex := example(t)
	tests := map[string]func(){
		"authorize allowed by policy": func() { ps.Authorize(sa("a"), d, 8080) },
		"authorize permissive":        func() { ps.Authorize(spiffe.ID{}, e, 8080) },
		"resolve vip":                 func() { _, _ = ex.Resolve(ap("10.96.0.10:80")) },
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, f); got != 0 {
				t.Errorf("allocations per call = %v, want 0", got)
			}
		})
	}
}
