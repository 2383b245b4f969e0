package state

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/spiffe"
)

func TestParseExample(t *testing.T) {
	s := example(t)
	if got, want := len(s.Workloads), 6; got != want {
		t.Errorf("len(Workloads) = %d, want %d", got, want)
	}
	if got, want := len(s.Services), 2; got != want {
		t.Errorf("len(Services) = %d, want %d", got, want)
	}
	if got, want := len(s.Policies), 1; got != want {
		t.Errorf("len(Policies) = %d, want %d", got, want)
	}
	roots := s.TrustedRoots()
	if len(roots) != 1 || roots[0].Subject.Organization[0] != "weft test root" {
		t.Errorf("TrustedRoots() = %d certificates, want the weft test root", len(roots))
	}
	if got, want := s.Services[0].Endpoints[0].Ports[443], uint16(8443); got != want {
		t.Errorf("cart endpoint 0 Ports[443] = %d, want %d", got, want)
	}
	if got, want := s.Workloads[2].IPs, []netip.Addr{ip("10.1.0.4"), ip("fd00::4")}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("d-1 IPs = %v, want %v", got, want)
	}
}

// validDoc is the smallest snapshot with one of everything; error cases
// break one thing in it.
const validDoc = `{
  "workloads": [{"uid": "u1", "namespace": "shop", "name": "cart", "serviceAccount": "cart", "ips": ["10.0.0.1"]}],
  "services": [{"namespace": "shop", "name": "web", "vips": ["10.96.0.1"], "ports": [{"port": 80}],
                "endpoints": [{"address": "10.0.0.1", "workloadUid": "u1", "ready": true}]}],
  "policies": [{"name": "shop/tt", "destination": {"namespace": "shop", "serviceAccount": "cart"},
                "sources": ["spiffe://cluster.local/ns/shop/sa/web"], "rules": [{"kind": "TCPRoute"}]}]
}`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		old  string // replaced in validDoc by new
		new  string
		want string // substring of the error
	}{
		{"not JSON", validDoc, `{"workloads": [`, "parse snapshot"},
		{"empty", validDoc, ``, "not a JSON object"},
		{"null", validDoc, `null`, "not a JSON object"},
		{"trailing garbage", validDoc, validDoc + `x`, "parse snapshot"},
		{"wrong type at top", `"workloads": [`, `"version": 3, "workloads": [`, `member "version": JSON number where a string was expected`},
		{"workloads not an array", `"workloads": [{`, `"workloads": 5, "x": [{`, `member "workloads": JSON number where an array was expected`},
		{"wrong type in workload", `"uid": "u1"`, `"uid": 1`, `workload shop/cart: member "uid": JSON number`},
		{"invalid ip", `"ips": ["10.0.0.1"]`, `"ips": ["10.0.0.999"]`, `workload shop/cart: invalid ip "10.0.0.999"`},
		{"ip with zone", `"ips": ["10.0.0.1"]`, `"ips": ["fe80::1%eth0"]`, `workload shop/cart: ip: fe80::1%eth0 has a zone`},
		{"unspecified ip", `"ips": ["10.0.0.1"]`, `"ips": ["0.0.0.0"]`, `workload shop/cart: ip: 0.0.0.0 is unspecified`},
		{"empty ip", `"ips": ["10.0.0.1"]`, `"ips": [""]`, `workload shop/cart: ip: missing address`},
		{"no ips", `"ips": ["10.0.0.1"]`, `"ips": []`, "workload shop/cart: no ips"},
		{"missing uid", `"uid": "u1", `, ``, "workload shop/cart: missing uid"},
		{"missing namespace", `"namespace": "shop", "name": "cart"`, `"name": "cart"`, "workload cart: missing namespace"},
		{"missing name", `"namespace": "shop", "name": "cart"`, `"namespace": "shop"`, "workload #0: missing name"},
		{"missing service account", `"serviceAccount": "cart", "ips"`, `"ips"`, "workload shop/cart: missing serviceAccount"},
		{"service account not a SPIFFE segment", `"serviceAccount": "cart"`, `"serviceAccount": "Cart"`, "workload shop/cart: identity: invalid SPIFFE ID"},
		{"unknown protocol", `"serviceAccount": "cart"`, `"serviceAccount": "cart", "protocol": "UDP"`, `workload shop/cart: protocol "UDP"`},
		{
			"ip owned by two workloads",
			`"ips": ["10.0.0.1"]}]`,
			`"ips": ["10.0.0.1"]}, {"uid": "u2", "namespace": "shop", "name": "cart-2", "serviceAccount": "cart", "ips": ["fd00::1", "::ffff:10.0.0.1"]}]`,
			"workload shop/cart-2: ip 10.0.0.1 is also an ip of workload shop/cart",
		},
		{
			"uid owned by two workloads",
			`"ips": ["10.0.0.1"]}]`,
			`"ips": ["10.0.0.1"]}, {"uid": "u1", "namespace": "shop", "name": "cart-2", "serviceAccount": "cart", "ips": ["10.0.0.2"]}]`,
			`workload shop/cart-2: uid "u1" is also the uid of workload shop/cart`,
		},
		{"invalid vip", `"vips": ["10.96.0.1"]`, `"vips": ["10.96.0"]`, `service shop/web: invalid vip "10.96.0"`},
		{"vip is a workload ip", `"vips": ["10.96.0.1"]`, `"vips": ["10.0.0.1"]`, "service shop/web: vip 10.0.0.1 is also an ip of workload shop/cart"},
		{"port 0", `"ports": [{"port": 80}]`, `"ports": [{"port": 0}]`, "service shop/web: port 0: port 0 is not in 1..65535"},
		{"port out of range", `"ports": [{"port": 80}]`, `"ports": [{"port": 65536}]`, `service shop/web: member "ports.port": JSON number 65536 where an integer in 0..65535 was expected`},
		{"port listed twice", `"ports": [{"port": 80}]`, `"ports": [{"port": 80}, {"port": 80, "name": "again"}]`, "service shop/web: port 80 listed twice"},
		{
			"vip port owned by two services",
			`"ready": true}]}]`,
			`"ready": true}]}, {"namespace": "shop", "name": "web-2", "vips": ["10.96.0.1"], "ports": [{"port": 81}, {"port": 80}]}]`,
			"service shop/web-2: 10.96.0.1:80 is also a port of service shop/web",
		},
		{"missing service name", `"name": "web", `, ``, "service #0: missing name"},
		{"invalid endpoint address", `"address": "10.0.0.1"`, `"address": "ten"`, `service shop/web: endpoint 0: invalid address "ten"`},
		{"missing endpoint address", `"address": "10.0.0.1", `, ``, "service shop/web: endpoint 0: address: missing address"},
		{"endpoint port mapping to 0", `"ready": true}`, `"ready": true, "ports": {"80": 0}}`, "service shop/web: endpoint 10.0.0.1: port mapping 80→0 is not in 1..65535"},
		{"endpoint port mapping not a number", `"ready": true}`, `"ready": true, "ports": {"http": 8080}}`, "service shop/web: endpoint 0:"},
		{"endpoint of another workload's ip", `"address": "10.0.0.1"`, `"address": "10.0.0.2"`, `service shop/web: endpoint 10.0.0.2 names workload shop/cart (uid "u1"), which does not have that ip`},
		{"source not a SPIFFE ID", `"sources": ["spiffe://cluster.local/ns/shop/sa/web"]`, `"sources": ["shop/web"]`, "policy shop/tt: source 0: invalid SPIFFE ID"},
		{"source in another trust domain", `"sources": ["spiffe://cluster.local/ns/shop/sa/web"]`, `"sources": ["spiffe://other.example/ns/shop/sa/web"]`, `policy shop/tt: source "spiffe://other.example/ns/shop/sa/web" is not in trust domain "cluster.local"`},
		{"missing policy name", `"name": "shop/tt", `, ``, "policy #0: missing name"},
		{
			"policy name listed twice",
			`"rules": [{"kind": "TCPRoute"}]}]`,
			`"rules": [{"kind": "TCPRoute"}]}, {"name": "shop/tt", "destination": {"namespace": "shop", "serviceAccount": "x"}}]`,
			"policy shop/tt: name listed twice",
		},
		{"missing destination", `"destination": {"namespace": "shop", "serviceAccount": "cart"}`, `"destination": {"namespace": "shop"}`, "policy shop/tt: destination: missing serviceAccount"},
		{"missing rule kind", `"rules": [{"kind": "TCPRoute"}]`, `"rules": [{"ports": [80]}]`, "policy shop/tt: rule 0: missing kind"},
		{"rule port 0", `"rules": [{"kind": "TCPRoute"}]`, `"rules": [{"kind": "TCPRoute", "ports": [0]}]`, "policy shop/tt: rule 0: port 0"},
		{"policy mode", `"workloads"`, `"policyMode": "enforcing", "workloads"`, `policy mode "enforcing": want "permissive" or "strict"`},
		{"trust domain", `"workloads"`, `"trustDomain": "Cluster.Local", "workloads"`, `trust domain "Cluster.Local"`},
		{"trust bundle not PEM", `"workloads"`, `"trustBundle": "not a certificate", "workloads"`, "trust bundle: block 0 is not PEM"},
		{
			"trust bundle key, not certificate",
			`"workloads"`,
			`"trustBundle": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "workloads"`,
			`trust bundle: block 0 is a "PRIVATE KEY", want CERTIFICATE`,
		},
		{
			"trust bundle garbage certificate",
			`"workloads"`,
			`"trustBundle": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "workloads"`,
			"trust bundle: parse certificate 0",
		},
	}
	if _, err := Parse([]byte(validDoc)); err != nil {
		t.Fatalf("Parse(validDoc) = %v, want no error", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(validDoc, tt.old) {
				t.Fatalf("validDoc does not contain %q", tt.old)
			}
			doc := strings.Replace(validDoc, tt.old, tt.new, 1)
			s, err := Parse([]byte(doc))
			if err == nil {
				t.Fatalf("Parse() = %+v, nil; want an error containing %q", s, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse() error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseIgnoresUnknownMembers(t *testing.T) {
	doc := strings.NewReplacer(
		`"workloads"`, `"future": {"nested": [1, 2]}, "workloads"`,
		`"ips"`, `"labels": {"a": "b"}, "ips"`,
		`"ready": true`, `"ready": true, "zone": "z1"`,
		`"kind": "TCPRoute"`, `"kind": "TCPRoute", "matches": ["x"]`,
	).Replace(validDoc)
	s, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse() = %v, want no error", err)
	}
	if w := s.WorkloadByUID("u1"); w == nil || w.Name != "cart" {
		t.Errorf("WorkloadByUID(u1) = %+v, want shop/cart", w)
	}
}

func TestWorkloadByIP(t *testing.T) {
	s := example(t)
	tests := []struct {
		name string
		ip   netip.Addr
		want string // workload name, "" for nil
	}{
		{"ipv4", ip("10.1.0.1"), "a-1"},
		{"ipv6", ip("fd00::4"), "d-1"},
		{"second ip of dual-stack workload's ipv4", ip("10.1.0.4"), "d-1"},
		{"ipv4-mapped ipv6", ip("::ffff:10.1.0.2"), "b-1"},
		{"unknown", ip("10.9.9.9"), ""},
		{"service vip", ip("10.96.0.10"), ""},
		{"zero", netip.Addr{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if w := s.WorkloadByIP(tt.ip); w != nil {
				got = w.Name
			}
			if got != tt.want {
				t.Errorf("WorkloadByIP(%v) = %q, want %q", tt.ip, got, tt.want)
			}
		})
	}
}

func TestWorkloadByUID(t *testing.T) {
	s := example(t)
	tests := map[string]string{"a1": "a-1", "db0": "db-0", "nope": "", "": ""}
	for uid, want := range tests {
		t.Run(uid, func(t *testing.T) {
			got := ""
			if w := s.WorkloadByUID(uid); w != nil {
				got = w.Name
			}
			if got != want {
				t.Errorf("WorkloadByUID(%q) = %q, want %q", uid, got, want)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	w := &Workload{Namespace: "shop", ServiceAccount: "cart"}
	tests := []struct {
		name string
		td   string
		w    *Workload
		want string
	}{
		{"default trust domain", "", w, "spiffe://cluster.local/ns/shop/sa/cart"},
		{"own trust domain", "mesh.example", w, "spiffe://mesh.example/ns/shop/sa/cart"},
		{"no workload", "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Snapshot{TrustDomain: tt.td}
			if got := s.Identity(tt.w).String(); got != tt.want {
				t.Errorf("Identity() = %q, want %q", got, tt.want)
			}
		})
	}
}

// A Snapshot built in Go, never parsed, validates and answers lookups; a
// modified copy of an indexed one answers from its own content.
func TestUnindexedSnapshot(t *testing.T) {
	s := &Snapshot{Workloads: []Workload{{UID: "u1", Namespace: "shop", Name: "cart", ServiceAccount: "cart", IPs: []netip.Addr{ip("10.0.0.1")}}}}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if w := s.WorkloadByIP(ip("10.0.0.1")); w == nil || w.UID != "u1" {
		t.Errorf("WorkloadByIP(10.0.0.1) = %+v, want u1", w)
	}

	parsed := mustParse(t, []byte(validDoc))
	c := *parsed
	c.Workloads = []Workload{{UID: "u9", Namespace: "shop", Name: "other", ServiceAccount: "other", IPs: []netip.Addr{ip("10.0.0.9")}}}
	if w := c.WorkloadByIP(ip("10.0.0.1")); w != nil {
		t.Errorf("copy: WorkloadByIP(10.0.0.1) = %+v, want nil (the copy has no such workload)", w)
	}
	if w := c.WorkloadByIP(ip("10.0.0.9")); w == nil || w.UID != "u9" {
		t.Errorf("copy: WorkloadByIP(10.0.0.9) = %+v, want u9", w)
	}
	if w := parsed.WorkloadByIP(ip("10.0.0.1")); w == nil || w.UID != "u1" {
		t.Errorf("original: WorkloadByIP(10.0.0.1) = %+v, want u1", w)
	}
}

func TestValidateReportsHandBuiltProblems(t *testing.T) {
	s := &Snapshot{
		PolicyMode: ModeStrict,
		Policies: []Policy{{
			Name:        "shop/tt",
			Destination: Destination{Namespace: "shop", ServiceAccount: "cart"},
			Sources:     []string{spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"}.String(), "spiffe://cluster.local/ns/shop"},
		}},
	}
	err := s.Validate()
	if err == nil || !strings.Contains(err.Error(), "policy shop/tt: source 1") {
		t.Errorf("Validate() = %v, want an error about policy shop/tt: source 1", err)
	}
}

// Parse's output encodes back to the same document it read (less unknown
// members): the JSON shape of types.go is what Parse reads.
func TestParseEncodeRoundTrip(t *testing.T) {
	s := example(t)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	s2 := mustParse(t, b)
	b2, err := json.Marshal(s2)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(b2) {
		t.Errorf("re-encoded snapshot differs:\n got %s\nwant %s", b2, b)
	}
	if strings.Contains(string(b), "futureLabel") || strings.Contains(string(b), "comment") {
		t.Errorf("encoded snapshot keeps unknown members: %s", b)
	}
}
