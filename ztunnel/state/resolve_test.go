package state

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// target is a Target in a form that compares and prints well.
type target struct {
	addr     string
	workload string // namespace/name, "" for none
	hbone    bool
}

func (t target) String() string { return fmt.Sprintf("{%s %q hbone=%v}", t.addr, t.workload, t.hbone) }

func targets(ts []Target) []target {
	out := make([]target, len(ts))
	for i, t := range ts {
		out[i] = target{addr: t.Addr.String(), hbone: t.HBONE}
		if t.Workload != nil {
			out[i].workload = t.Workload.label()
		}
	}
	return out
}

func TestResolve(t *testing.T) {
	s := example(t)
	tests := []struct {
		name    string
		dst     netip.AddrPort
		service string // namespace/name, "" for none
		port    uint16 // service port
		want    []target
		wantErr string
	}{
		{
			name: "vip with target port", dst: ap("10.96.0.10:80"), service: "shop/cart", port: 80,
			// d-3 is not ready; 10.3.0.7 is no known workload.
			want: []target{{"10.1.0.4:8080", "shop/d-1", true}, {"10.1.0.5:8080", "shop/d-2", true}, {"10.3.0.7:8080", "", false}},
		},
		{
			name: "named target port from endpoint ports", dst: ap("10.96.0.10:443"), service: "shop/cart", port: 443,
			want: []target{{"10.1.0.4:8443", "shop/d-1", true}, {"10.1.0.5:9443", "shop/d-2", true}, {"10.3.0.7:8443", "", false}},
		},
		{
			name: "no target port: the service port", dst: ap("10.96.0.10:9090"), service: "shop/cart", port: 9090,
			want: []target{{"10.1.0.4:9090", "shop/d-1", true}, {"10.1.0.5:9090", "shop/d-2", true}, {"10.3.0.7:9090", "", false}},
		},
		{
			name: "second vip of the service", dst: ap("[fd00:96::10]:80"), service: "shop/cart", port: 80,
			want: []target{{"10.1.0.4:8080", "shop/d-1", true}, {"10.1.0.5:8080", "shop/d-2", true}, {"10.3.0.7:8080", "", false}},
		},
		{
			name: "ipv4-mapped vip", dst: ap("[::ffff:10.96.0.10]:80"), service: "shop/cart", port: 80,
			want: []target{{"10.1.0.4:8080", "shop/d-1", true}, {"10.1.0.5:8080", "shop/d-2", true}, {"10.3.0.7:8080", "", false}},
		},
		{
			name: "endpoint without uid found by ip, outside the mesh", dst: ap("10.96.0.20:5432"), service: "legacy/db", port: 5432,
			want: []target{{"10.2.0.9:5432", "legacy/db-0", false}},
		},
		{name: "unknown port of a vip", dst: ap("10.96.0.10:81"), wantErr: "service shop/cart has no port 81 (it has 80, 9090, 443)"},
		{name: "workload ip", dst: ap("10.1.0.2:7000"), want: []target{{"10.1.0.2:7000", "shop/b-1", true}}},
		{name: "ipv4-mapped workload ip", dst: ap("[::ffff:10.1.0.2]:7000"), want: []target{{"10.1.0.2:7000", "shop/b-1", true}}},
		{name: "ipv6 workload ip", dst: ap("[fd00::4]:8080"), want: []target{{"[fd00::4]:8080", "shop/d-1", true}}},
		{name: "workload outside the mesh", dst: ap("10.2.0.9:5432"), want: []target{{"10.2.0.9:5432", "legacy/db-0", false}}},
		{name: "not-ready workload dialled directly", dst: ap("10.1.0.6:8080"), want: []target{{"10.1.0.6:8080", "shop/d-3", true}}},
		{name: "passthrough", dst: ap("93.184.215.14:443"), want: []target{{"93.184.215.14:443", "", false}}},
		{name: "ipv4-mapped passthrough", dst: ap("[::ffff:93.184.215.14]:443"), want: []target{{"93.184.215.14:443", "", false}}},
		{name: "invalid destination", dst: netip.AddrPort{}, wantErr: "invalid destination"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := s.Resolve(tt.dst)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resolve(%v) error = %v, want one containing %q", tt.dst, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%v) = %v, want no error", tt.dst, err)
			}
			gotSvc := ""
			if r.Service != nil {
				gotSvc = r.Service.label()
			}
			if gotSvc != tt.service {
				t.Errorf("Resolve(%v).Service = %q, want %q", tt.dst, gotSvc, tt.service)
			}
			var gotPort uint16
			if r.Port != nil {
				gotPort = r.Port.Port
			}
			if gotPort != tt.port {
				t.Errorf("Resolve(%v).Port = %d, want %d", tt.dst, gotPort, tt.port)
			}
			if got := targets(r.Candidates); !slices.Equal(got, tt.want) {
				t.Errorf("Resolve(%v).Candidates =\n  %v\nwant\n  %v", tt.dst, got, tt.want)
			}
		})
	}
}

func TestResolveUnknownPortIsErrNoServicePort(t *testing.T) {
	_, err := example(t).Resolve(ap("10.96.0.20:80"))
	if !errors.Is(err, ErrNoServicePort) {
		t.Errorf("Resolve(10.96.0.20:80) = %v, want an error wrapping ErrNoServicePort", err)
	}
}

func TestResolveNoReadyEndpoint(t *testing.T) {
	s := build(t, Snapshot{Services: []Service{{
		Namespace: "shop", Name: "down", VIPs: []netip.Addr{ip("10.96.0.5")}, Ports: []ServicePort{{Port: 80}},
		Endpoints: []Endpoint{{Address: ip("10.1.0.9"), Ready: false}},
	}}})
	r, err := s.Resolve(ap("10.96.0.5:80"))
	if err != nil || r.Service == nil || len(r.Candidates) != 0 {
		t.Errorf("Resolve(10.96.0.5:80) = %+v, %v; want the service with no candidates", r, err)
	}
	if _, ok := (&Balancer{}).Pick(r, nil); ok {
		t.Errorf("Pick() of a service without ready endpoints = ok, want false")
	}
}

func TestHBONEAddr(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"ipv4": {"10.1.0.4:8080", "10.1.0.4:15008"},
		"ipv6": {"[fd00::4]:80", "[fd00::4]:15008"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := (Target{Addr: ap(tt.in)}).HBONEAddr().String(); got != tt.want {
				t.Errorf("Target{%s}.HBONEAddr() = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}
