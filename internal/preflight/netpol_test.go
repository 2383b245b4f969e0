package preflight

import (
	"context"
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func tcp(port int) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(int32(port))
	proto := corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
}

func ingressPolicy(name string, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: ports}},
		},
	}
}

func TestHBONEGaps(t *testing.T) {
	udp := corev1.ProtocolUDP
	named := intstr.FromString("http")
	rangeTo := func(lo, hi int32) networkingv1.NetworkPolicyPort {
		p := tcp(int(lo))
		p.EndPort = &hi
		return p
	}
	allTCP := networkingv1.NetworkPolicyPort{}
	udp15008 := tcp(hbonePort)
	udp15008.Protocol = &udp
	egressOnly := func(ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicy {
		return networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{Ports: ports}},
		}}
	}
	tests := []struct {
		name string
		np   networkingv1.NetworkPolicy
		want []string
	}{
		{name: "app port only", np: ingressPolicy("web", tcp(80)), want: []string{"ingress"}},
		{name: "app port and hbone", np: ingressPolicy("web", tcp(80), tcp(hbonePort))},
		{name: "all ports", np: ingressPolicy("web")},
		{name: "all tcp ports", np: ingressPolicy("web", allTCP)},
		{name: "range covering hbone", np: ingressPolicy("web", rangeTo(15000, 15010))},
		{name: "range below hbone", np: ingressPolicy("web", rangeTo(8000, 9000)), want: []string{"ingress"}},
		{name: "udp 15008 only", np: ingressPolicy("dns", udp15008), want: []string{"ingress"}},
		{name: "named port", np: ingressPolicy("web", networkingv1.NetworkPolicyPort{Port: &named}), want: []string{"ingress"}},
		{
			name: "deny all ingress",
			np: networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			}},
		},
		{
			name: "second rule allows hbone",
			np: networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{tcp(80)}}, {Ports: []networkingv1.NetworkPolicyPort{tcp(hbonePort)}}},
			}},
		},
		{name: "egress app port", np: egressOnly(tcp(5432)), want: []string{"egress"}},
		{name: "egress hbone", np: egressOnly(tcp(5432), tcp(hbonePort))},
		{
			name: "default policy types include egress rules",
			np: networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{tcp(80)}}},
				Egress:  []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{tcp(53)}}},
			}},
			want: []string{"ingress", "egress"},
		},
		{
			name: "ingress rules ignored without the ingress type",
			np: networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{tcp(80)}}},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HBONEGaps(&tt.np); !slices.Equal(got, tt.want) {
				t.Errorf("HBONEGaps(%+v) = %q, want %q", tt.np.Spec, got, tt.want)
			}
		})
	}
}

// fakePolicies is a PolicySource over fixed data.
type fakePolicies struct {
	policies map[string][]networkingv1.NetworkPolicy // by enrolled namespace
	err      error
}

func (f *fakePolicies) Server() string { return "https://fake:6443" }

func (f *fakePolicies) EnrolledNamespaces(context.Context) ([]string, error) {
	if f.err != nil {
		return nil, f.err
	}
	var names []string
	for ns := range f.policies {
		names = append(names, ns)
	}
	slices.Sort(names)
	return names, nil
}

func (f *fakePolicies) NetworkPolicies(_ context.Context, ns string) ([]networkingv1.NetworkPolicy, error) {
	return f.policies[ns], nil
}

func TestCheckNetworkPolicies(t *testing.T) {
	tests := []struct {
		name       string
		src        PolicySource
		want       Status
		wantDetail string
	}{
		{name: "no cluster access", want: StatusSkip, wantDetail: "no cluster access"},
		{name: "nothing enrolled", src: &fakePolicies{}, want: StatusPass, wantDetail: "0 enrolled namespaces, 0 NetworkPolicies: none blocks TCP 15008 (HBONE)"},
		{
			name: "compatible policies",
			src: &fakePolicies{policies: map[string][]networkingv1.NetworkPolicy{
				"shop": {ingressPolicy("web", tcp(80), tcp(hbonePort))},
			}},
			want: StatusPass, wantDetail: "1 enrolled namespace, 1 NetworkPolicy: none blocks TCP 15008 (HBONE)",
		},
		{
			name: "blocking policies listed",
			src: &fakePolicies{policies: map[string][]networkingv1.NetworkPolicy{
				"shop":    {ingressPolicy("web", tcp(80)), ingressPolicy("ok")},
				"billing": {ingressPolicy("db", tcp(5432))},
				"empty":   nil,
			}},
			want:       StatusWarn,
			wantDetail: "3 enrolled namespaces, 3 NetworkPolicies; 2 would block TCP 15008 (HBONE): billing/db (ingress), shop/web (ingress)",
		},
		{
			name: "api unreachable",
			src:  &fakePolicies{err: errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")},
			want: StatusWarn, wantDetail: "API server https://fake:6443: dial tcp 10.0.0.1:6443: connect: connection refused",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkNetworkPolicies(t.Context(), tt.src)
			if got.Name != "networkpolicy" || got.Status != tt.want || got.Detail != tt.wantDetail {
				t.Errorf("checkNetworkPolicies = %+v; want status %s, detail %q", got, tt.want, tt.wantDetail)
			}
			if (got.Hint == "") != (tt.want == StatusPass) {
				t.Errorf("checkNetworkPolicies hint = %q; want a hint exactly when not passing", got.Hint)
			}
		})
	}
}
