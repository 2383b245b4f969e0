package filter

import (
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/weftmesh/weft/daemon/flows/internal/flowtest"
	"github.com/weftmesh/weft/internal/flowid"
)

func TestFlowFilterMatches(t *testing.T) {
	tests := []struct {
		name string
		ff   *flowpb.FlowFilter
		flow *flowpb.Flow
		want bool
	}{
		{"empty filter matches all", &flowpb.FlowFilter{}, flowtest.L4Flow(), true},
		{"uuid", &flowpb.FlowFilter{Uuid: []string{"u-1"}}, flowtest.L4Flow(), true},
		{"uuid other", &flowpb.FlowFilter{Uuid: []string{"u-2"}}, flowtest.L4Flow(), false},
		{"source pod ns/prefix", &flowpb.FlowFilter{SourcePod: []string{"shop/web"}}, flowtest.L4Flow(), true},
		{"source pod namespace only", &flowpb.FlowFilter{SourcePod: []string{"shop/"}}, flowtest.L4Flow(), true},
		{"source pod any namespace", &flowpb.FlowFilter{SourcePod: []string{"/web-"}}, flowtest.L4Flow(), true},
		{"bare pod name is in default", &flowpb.FlowFilter{SourcePod: []string{"web"}}, flowtest.L4Flow(), false},
		{"bare pod name default ns", &flowpb.FlowFilter{SourcePod: []string{"a"}}, flowtest.HTTPFlow(), true},
		{"source pod other namespace", &flowpb.FlowFilter{SourcePod: []string{"other/web"}}, flowtest.L4Flow(), false},
		{"source pod prefix mismatch", &flowpb.FlowFilter{SourcePod: []string{"shop/db"}}, flowtest.L4Flow(), false},
		{"destination pod", &flowpb.FlowFilter{DestinationPod: []string{"shop/db-"}}, flowtest.L4Flow(), true},
		{"pod list is ORed", &flowpb.FlowFilter{DestinationPod: []string{"x/y", "shop/db"}}, flowtest.L4Flow(), true},
		{"fields are ANDed", &flowpb.FlowFilter{SourcePod: []string{"shop/web"}, DestinationPod: []string{"shop/web"}}, flowtest.L4Flow(), false},
		{"source ip", &flowpb.FlowFilter{SourceIp: []string{"10.1.0.5"}}, flowtest.L4Flow(), true},
		{"source ip cidr", &flowpb.FlowFilter{SourceIp: []string{"10.1.0.0/24"}}, flowtest.L4Flow(), true},
		{"destination ip cidr miss", &flowpb.FlowFilter{DestinationIp: []string{"10.1.0.0/24"}}, flowtest.L4Flow(), false},
		{"ip version", &flowpb.FlowFilter{IpVersion: []flowpb.IPVersion{flowpb.IPVersion_IPv6}}, flowtest.L4Flow(), false},
		{"source label k8s", &flowpb.FlowFilter{SourceLabel: []string{"k8s:app=web"}}, flowtest.L4Flow(), true},
		{"source label any source", &flowpb.FlowFilter{SourceLabel: []string{"app=web"}}, flowtest.L4Flow(), true},
		{"source label wrong source", &flowpb.FlowFilter{SourceLabel: []string{"reserved:app=web"}}, flowtest.L4Flow(), false},
		{"label in", &flowpb.FlowFilter{DestinationLabel: []string{"app in (db, cache)"}}, flowtest.L4Flow(), true},
		{"label notin", &flowpb.FlowFilter{DestinationLabel: []string{"app notin (db, cache)"}}, flowtest.L4Flow(), false},
		{"label and", &flowpb.FlowFilter{DestinationLabel: []string{"app=db,tier=data"}}, flowtest.L4Flow(), true},
		{"label and fails", &flowpb.FlowFilter{DestinationLabel: []string{"app=db,tier!=data"}}, flowtest.L4Flow(), false},
		{"label exists", &flowpb.FlowFilter{DestinationLabel: []string{"tier"}}, flowtest.L4Flow(), true},
		{"label not exists", &flowpb.FlowFilter{DestinationLabel: []string{"!tier"}}, flowtest.L4Flow(), false},
		{"label namespace", &flowpb.FlowFilter{SourceLabel: []string{"k8s:io.kubernetes.pod.namespace=shop"}}, flowtest.L4Flow(), true},
		{"principal label", &flowpb.FlowFilter{SourceLabel: []string{flowid.PrincipalLabel(flowtest.WebID)}}, flowtest.L4Flow(), true},
		{"principal label other", &flowpb.FlowFilter{SourceLabel: []string{"weft:principal=spiffe://x"}}, flowtest.L4Flow(), false},
		{"source identity", &flowpb.FlowFilter{SourceIdentity: []uint32{flowid.Identity(flowtest.WebID)}}, flowtest.L4Flow(), true},
		{"destination identity miss", &flowpb.FlowFilter{DestinationIdentity: []uint32{flowid.Identity(flowtest.WebID)}}, flowtest.L4Flow(), false},
		{"verdict", &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}, flowtest.DroppedFlow(), true},
		{"verdict miss", &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}, flowtest.L4Flow(), false},
		{"drop reason", &flowpb.FlowFilter{DropReasonDesc: []flowpb.DropReason{flowpb.DropReason_POLICY_DENIED}}, flowtest.DroppedFlow(), true},
		{"event type l4", &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{Type: 4}}}, flowtest.L4Flow(), true},
		{"event type l7 on l4", &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{Type: 129}}}, flowtest.L4Flow(), false},
		{"event subtype", &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{Type: 4, MatchSubType: true, SubType: 3}}}, flowtest.L4Flow(), false},
		{"destination port", &flowpb.FlowFilter{DestinationPort: []string{"5432"}}, flowtest.L4Flow(), true},
		{"source port miss", &flowpb.FlowFilter{SourcePort: []string{"5432"}}, flowtest.L4Flow(), false},
		{"protocol tcp", &flowpb.FlowFilter{Protocol: []string{"TCP"}}, flowtest.L4Flow(), true},
		{"protocol udp", &flowpb.FlowFilter{Protocol: []string{"udp"}}, flowtest.L4Flow(), false},
		{"protocol http", &flowpb.FlowFilter{Protocol: []string{"http"}}, flowtest.HTTPFlow(), true},
		{"protocol http on l4", &flowpb.FlowFilter{Protocol: []string{"http"}}, flowtest.L4Flow(), false},
		{"http status exact", &flowpb.FlowFilter{HttpStatusCode: []string{"503"}}, flowtest.HTTPFlow(), true},
		{"http status prefix", &flowpb.FlowFilter{HttpStatusCode: []string{"5+"}}, flowtest.HTTPFlow(), true},
		{"http status prefix miss", &flowpb.FlowFilter{HttpStatusCode: []string{"4+"}}, flowtest.HTTPFlow(), false},
		{"http status on l4", &flowpb.FlowFilter{HttpStatusCode: []string{"5+"}}, flowtest.L4Flow(), false},
		{"http method", &flowpb.FlowFilter{HttpMethod: []string{"get"}}, flowtest.HTTPFlow(), true},
		{"http method miss", &flowpb.FlowFilter{HttpMethod: []string{"POST"}}, flowtest.HTTPFlow(), false},
		{"http path regexp", &flowpb.FlowFilter{HttpPath: []string{"^/api/"}}, flowtest.HTTPFlow(), true},
		{"http path excludes query", &flowpb.FlowFilter{HttpPath: []string{"x=1"}}, flowtest.HTTPFlow(), false},
		{"http url", &flowpb.FlowFilter{HttpUrl: []string{"x=1$"}}, flowtest.HTTPFlow(), true},
		{"http header", &flowpb.FlowFilter{HttpHeader: []*flowpb.HTTPHeader{{Key: "x-env", Value: "prod"}}}, flowtest.HTTPFlow(), true},
		{"traffic direction", &flowpb.FlowFilter{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_EGRESS}}, flowtest.L4Flow(), true},
		{"traffic direction miss", &flowpb.FlowFilter{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_INGRESS}}, flowtest.L4Flow(), false},
		{"node name", &flowpb.FlowFilter{NodeName: []string{"node-a"}}, flowtest.L4Flow(), true},
		{"node name glob", &flowpb.FlowFilter{NodeName: []string{"node-*"}}, flowtest.L4Flow(), true},
		{"node name cluster", &flowpb.FlowFilter{NodeName: []string{"default/"}}, flowtest.L4Flow(), true},
		{"node name miss", &flowpb.FlowFilter{NodeName: []string{"node-b"}}, flowtest.L4Flow(), false},
		{"destination fqdn", &flowpb.FlowFilter{DestinationFqdn: []string{"*.shop.svc.cluster.local"}}, flowtest.L4Flow(), true},
		{"source fqdn miss", &flowpb.FlowFilter{SourceFqdn: []string{"*.shop.svc.cluster.local"}}, flowtest.L4Flow(), false},
		{"workload", &flowpb.FlowFilter{SourceWorkload: []*flowpb.Workload{{Name: "web"}}}, flowtest.L4Flow(), true},
		{"workload kind miss", &flowpb.FlowFilter{SourceWorkload: []*flowpb.Workload{{Kind: "StatefulSet"}}}, flowtest.L4Flow(), false},
		{"tcp flags", &flowpb.FlowFilter{TcpFlags: []*flowpb.TCPFlags{{SYN: true}}}, flowtest.L4Flow(), true},
		{"tcp flags miss", &flowpb.FlowFilter{TcpFlags: []*flowpb.TCPFlags{{SYN: true, ACK: true}}}, flowtest.L4Flow(), false},
		{"reply false", &flowpb.FlowFilter{Reply: []bool{false}}, flowtest.L4Flow(), true},
		{"reply unknown on drop is false", &flowpb.FlowFilter{Reply: []bool{false}}, flowtest.DroppedFlow(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := compileFlowFilter(tt.ff)
			if err != nil {
				t.Fatalf("compileFlowFilter(%v): %v", tt.ff, err)
			}
			if got := m(tt.flow); got != tt.want {
				t.Errorf("filter %v on flow = %v, want %v", tt.ff, got, tt.want)
			}
		})
	}
}

func TestFlowFilterErrors(t *testing.T) {
	tests := []struct {
		name string
		ff   *flowpb.FlowFilter
		want string // in the error
	}{
		{"empty pod", &flowpb.FlowFilter{SourcePod: []string{""}}, "source_pod"},
		{"bad ip", &flowpb.FlowFilter{SourceIp: []string{"10.0.0.300"}}, "source_ip"},
		{"bad cidr", &flowpb.FlowFilter{DestinationIp: []string{"10.0.0.0/40"}}, "destination_ip"},
		{"bad port", &flowpb.FlowFilter{DestinationPort: []string{"70000"}}, "destination_port"},
		{"bad protocol", &flowpb.FlowFilter{Protocol: []string{"quic"}}, "protocol"},
		{"bad status", &flowpb.FlowFilter{HttpStatusCode: []string{"6xx"}}, "http_status_code"},
		{"bad regexp", &flowpb.FlowFilter{HttpPath: []string{"("}}, "http_path"},
		{"bad label", &flowpb.FlowFilter{SourceLabel: []string{"app in (a"}}, "source_label"},
		{"bad node pattern", &flowpb.FlowFilter{NodeName: []string{"a/b/c"}}, "node_name"},
		{"bad fqdn", &flowpb.FlowFilter{DestinationFqdn: []string{"a b"}}, "destination_fqdn"},
		{"http with l4 event type", &flowpb.FlowFilter{HttpMethod: []string{"GET"}, EventType: []*flowpb.EventTypeFilter{{Type: 4}}}, "event type"},
		{"cel unsupported", &flowpb.FlowFilter{Experimental: &flowpb.FlowFilter_Experimental{CelExpression: []string{"true"}}}, "cel_expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileFlowFilter(tt.ff)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("compileFlowFilter(%v) error = %v, want one mentioning %q", tt.ff, err, tt.want)
			}
		})
	}
}

func TestWhitelistBlacklist(t *testing.T) {
	dropped := &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}
	shop := &flowpb.FlowFilter{SourcePod: []string{"shop/"}}
	tests := []struct {
		name                 string
		whitelist, blacklist []*flowpb.FlowFilter
		flow                 *flowpb.Flow
		want                 bool
	}{
		{"nothing passes all", nil, nil, flowtest.L4Flow(), true},
		{"whitelist entries are ORed", []*flowpb.FlowFilter{dropped, shop}, nil, flowtest.L4Flow(), true},
		{"whitelist miss", []*flowpb.FlowFilter{dropped}, nil, flowtest.L4Flow(), false},
		{"blacklist removes", []*flowpb.FlowFilter{shop}, []*flowpb.FlowFilter{dropped}, flowtest.DroppedFlow(), false},
		{"blacklist alone", nil, []*flowpb.FlowFilter{dropped}, flowtest.L4Flow(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Compile(tt.whitelist, tt.blacklist)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Match(tt.flow); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzCompileFilter feeds untrusted filter strings (as a GetFlows caller
// sends them) to the filter compiler and runs what compiles: it must never
// panic.
func FuzzCompileFilter(f *testing.F) {
	for _, s := range []string{"app=web", "k8s:app in (a, b),!tier", "shop/web", "node-*", "5+", "^/api", "10.0.0.0/8", "weft:principal=spiffe://x/y", "a(b", ")", "!", "=", ",", "app notin ()"} {
		f.Add(s)
	}
	flows := []*flowpb.Flow{flowtest.L4Flow(), flowtest.HTTPFlow(), flowtest.DroppedFlow(), {}}
	f.Fuzz(func(t *testing.T, s string) {
		for _, ff := range []*flowpb.FlowFilter{
			{SourceLabel: []string{s}}, {DestinationPod: []string{s}}, {NodeName: []string{s}},
			{HttpStatusCode: []string{s}}, {HttpPath: []string{s}}, {SourceIp: []string{s}},
			{DestinationFqdn: []string{s}}, {Protocol: []string{s}}, {DestinationPort: []string{s}},
			{SourceService: []string{s}}, {DnsQuery: []string{s}},
		} {
			m, err := compileFlowFilter(ff)
			if err != nil {
				continue
			}
			for _, fl := range flows {
				m(fl)
			}
		}
	})
}
