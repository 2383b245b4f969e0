package meshclient

import (
	"net/netip"
	"strings"
	"testing"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/internal/spiffe"
)

func res(name string, body any) *meshv1.Resource {
	r := &meshv1.Resource{Name: name, Version: "v1"}
	switch b := body.(type) {
	case *meshv1.MeshSettings:
		r.Body = &meshv1.Resource_Settings{Settings: b}
	case *meshv1.Workload:
		r.Body = &meshv1.Resource_Workload{Workload: b}
	case *meshv1.Service:
		r.Body = &meshv1.Resource_Service{Service: b}
	case *meshv1.Policy:
		r.Body = &meshv1.Resource_Policy{Policy: b}
	}
	return r
}

func set(rs ...*meshv1.Resource) map[string]*meshv1.Resource {
	m := make(map[string]*meshv1.Resource, len(rs))
	for _, r := range rs {
		m[r.Name] = r
	}
	return m
}

func TestSnapshotConvertsEveryKind(t *testing.T) {
	rs := set(
		res("settings", &meshv1.MeshSettings{PolicyMode: "strict"}),
		res("workloads/u1", &meshv1.Workload{Uid: "u1", Namespace: "shop", Name: "cart-1", ServiceAccount: "cart", Ips: []string{"10.244.1.7"}, WorkloadName: "cart"}),
		res("workloads/u2", &meshv1.Workload{Uid: "u2", Namespace: "shop", Name: "web-1", ServiceAccount: "web", Ips: []string{"10.244.0.3"}}),
		res("services/shop/cart", &meshv1.Service{Namespace: "shop", Name: "cart", Vips: []string{"10.96.0.20"},
			Ports:     []*meshv1.ServicePort{{Name: "http", Port: 80}},
			Endpoints: []*meshv1.Endpoint{{Address: "10.244.1.7", WorkloadUid: "u1", Ready: true, Ports: map[uint32]uint32{80: 8080}}}}),
		res("policies/shop/web-to-cart", &meshv1.Policy{Name: "shop/web-to-cart",
			Destination: &meshv1.Destination{Namespace: "shop", ServiceAccount: "cart"},
			Sources:     []string{"spiffe://cluster.local/ns/shop/sa/web"},
			Rules:       []*meshv1.Rule{{Kind: "TCPRoute", Name: "all", Ports: []uint32{8080}}}}),
	)
	snap, err := Snapshot(rs, "sys-1")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version != "sys-1" || snap.PolicyMode != "strict" || len(snap.Workloads) != 2 || len(snap.Services) != 1 || len(snap.Policies) != 1 {
		t.Fatalf("snapshot = %+v", snap)
	}
	res, err := snap.Resolve(netip.MustParseAddrPort("10.96.0.20:80"))
	if err != nil || len(res.Candidates) != 1 || res.Candidates[0].Addr != netip.MustParseAddrPort("10.244.1.7:8080") {
		t.Fatalf("Resolve(VIP) = %+v, %v; want the endpoint on its mapped port", res, err)
	}
	cart := snap.WorkloadByUID("u1")
	web, _ := spiffe.ParseID("spiffe://cluster.local/ns/shop/sa/web")
	if d := snap.Authorize(web, cart, 8080); !d.Allowed {
		t.Errorf("web → cart:8080 denied: %s", d.Reason)
	}
	if d := snap.Authorize(web, cart, 9090); d.Allowed {
		t.Errorf("web → cart:9090 allowed; the rule lists only 8080")
	}
}

func TestSnapshotRefusesBadSets(t *testing.T) {
	settings := res("settings", &meshv1.MeshSettings{})
	tests := []struct {
		name string
		rs   map[string]*meshv1.Resource
		want string
	}{
		{name: "no settings", rs: set(res("workloads/u1", &meshv1.Workload{Uid: "u1", Namespace: "a", Name: "b", ServiceAccount: "c", Ips: []string{"10.0.0.1"}})), want: "settings"},
		{name: "bad ip", rs: set(settings, res("workloads/u1", &meshv1.Workload{Uid: "u1", Namespace: "a", Name: "b", ServiceAccount: "c", Ips: []string{"10.0.0.999"}})), want: "10.0.0.999"},
		{name: "port out of range", rs: set(settings, res("services/a/b", &meshv1.Service{Namespace: "a", Name: "b", Vips: []string{"10.96.0.1"}, Ports: []*meshv1.ServicePort{{Port: 70000}}})), want: "70000"},
		{name: "no body", rs: set(settings, &meshv1.Resource{Name: "workloads/x", Version: "1"}), want: "no body"},
		{name: "rule port 0 does not become every port", rs: set(settings, res("policies/a/p", &meshv1.Policy{Name: "a/p",
			Destination: &meshv1.Destination{Namespace: "a", ServiceAccount: "d"}, Sources: []string{"spiffe://cluster.local/ns/a/sa/s"},
			Rules: []*meshv1.Rule{{Kind: "TCPRoute", Name: "r", Ports: []uint32{0}}}})), want: "port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Snapshot(tt.rs, "v")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Snapshot() error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}
