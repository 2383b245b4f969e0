package flows

import (
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/flowid"
)

const webID = "spiffe://cluster.local/ns/shop/sa/web"

// l4Flow is a forwarded TCP flow shop/web-7d9 -> shop/db-0:5432 on node-a.
func l4Flow() *flowpb.Flow {
	return &flowpb.Flow{
		Uuid:      "u-1",
		Verdict:   flowpb.Verdict_FORWARDED,
		NodeName:  "node-a",
		EventType: &flowpb.CiliumEventType{Type: 4},
		IP:        &flowpb.IP{Source: "10.1.0.5", Destination: "10.1.1.7", IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: 40000, DestinationPort: 5432, Flags: &flowpb.TCPFlags{SYN: true},
		}}},
		Source: &flowpb.Endpoint{
			Namespace: "shop", PodName: "web-7d9", Identity: flowid.Identity(webID),
			Labels:    []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop", flowid.PrincipalLabel(webID)},
			Workloads: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}},
		},
		Destination: &flowpb.Endpoint{
			Namespace: "shop", PodName: "db-0", Identity: 0x1234567,
			Labels: []string{"k8s:app=db", "k8s:tier=data"},
		},
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		IsReply:          wrapperspb.Bool(false),
		DestinationNames: []string{"db.shop.svc.cluster.local"},
	}
}

// httpFlow is an L7 GET /api/items?x=1 -> 503 between default/a and default/b.
func httpFlow() *flowpb.Flow {
	return &flowpb.Flow{
		Verdict:   flowpb.Verdict_FORWARDED,
		NodeName:  "node-b",
		EventType: &flowpb.CiliumEventType{Type: 129},
		L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 1, DestinationPort: 8080}}},
		L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
			Code: 503, Method: "GET", Url: "http://b.default:8080/api/items?x=1",
			Headers: []*flowpb.HTTPHeader{{Key: "x-env", Value: "prod"}},
		}}},
		Source:           &flowpb.Endpoint{Namespace: "default", PodName: "a"},
		Destination:      &flowpb.Endpoint{Namespace: "default", PodName: "b"},
		TrafficDirection: flowpb.TrafficDirection_INGRESS,
	}
}

func droppedFlow() *flowpb.Flow {
	f := l4Flow()
	f.Verdict = flowpb.Verdict_DROPPED
	f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
	f.IsReply = nil
	f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	return f
}

func TestFlowFilterMatches(t *testing.T) {
	tests := []struct {
		name string
		ff   *flowpb.FlowFilter
		flow *flowpb.Flow
		want bool
	}{
		{"empty filter matches all", &flowpb.FlowFilter{}, l4Flow(), true},
		{"uuid", &flowpb.FlowFilter{Uuid: []string{"u-1"}}, l4Flow(), true},
		{"uuid other", &flowpb.FlowFilter{Uuid: []string{"u-2"}}, l4Flow(), false},
		{"source pod ns/prefix", &flowpb.FlowFilter{SourcePod: []string{"shop/web"}}, l4Flow(), true},
		{"source pod namespace only", &flowpb.FlowFilter{SourcePod: []string{"shop/"}}, l4Flow(), true},
		{"source pod any namespace", &flowpb.FlowFilter{SourcePod: []string{"/web-"}}, l4Flow(), true},
		{"bare pod name is in default", &flowpb.FlowFilter{SourcePod: []string{"web"}}, l4Flow(), false},
		{"bare pod name default ns", &flowpb.FlowFilter{SourcePod: []string{"a"}}, httpFlow(), true},
		{"source pod other namespace", &flowpb.FlowFilter{SourcePod: []string{"other/web"}}, l4Flow(), false},
		{"source pod prefix mismatch", &flowpb.FlowFilter{SourcePod: []string{"shop/db"}}, l4Flow(), false},
		{"destination pod", &flowpb.FlowFilter{DestinationPod: []string{"shop/db-"}}, l4Flow(), true},
		{"pod list is ORed", &flowpb.FlowFilter{DestinationPod: []string{"x/y", "shop/db"}}, l4Flow(), true},
		{"fields are ANDed", &flowpb.FlowFilter{SourcePod: []string{"shop/web"}, DestinationPod: []string{"shop/web"}}, l4Flow(), false},
		{"source ip", &flowpb.FlowFilter{SourceIp: []string{"10.1.0.5"}}, l4Flow(), true},
		{"source ip cidr", &flowpb.FlowFilter{SourceIp: []string{"10.1.0.0/24"}}, l4Flow(), true},
		{"destination ip cidr miss", &flowpb.FlowFilter{DestinationIp: []string{"10.1.0.0/24"}}, l4Flow(), false},
		{"ip version", &flowpb.FlowFilter{IpVersion: []flowpb.IPVersion{flowpb.IPVersion_IPv6}}, l4Flow(), false},
		{"source label k8s", &flowpb.FlowFilter{SourceLabel: []string{"k8s:app=web"}}, l4Flow(), true},
		{"source label any source", &flowpb.FlowFilter{SourceLabel: []string{"app=web"}}, l4Flow(), true},
		{"source label wrong source", &flowpb.FlowFilter{SourceLabel: []string{"reserved:app=web"}}, l4Flow(), false},
		{"label in", &flowpb.FlowFilter{DestinationLabel: []string{"app in (db, cache)"}}, l4Flow(), true},
		{"label notin", &flowpb.FlowFilter{DestinationLabel: []string{"app notin (db, cache)"}}, l4Flow(), false},
		{"label and", &flowpb.FlowFilter{DestinationLabel: []string{"app=db,tier=data"}}, l4Flow(), true},
		{"label and fails", &flowpb.FlowFilter{DestinationLabel: []string{"app=db,tier!=data"}}, l4Flow(), false},
		{"label exists", &flowpb.FlowFilter{DestinationLabel: []string{"tier"}}, l4Flow(), true},
		{"label not exists", &flowpb.FlowFilter{DestinationLabel: []string{"!tier"}}, l4Flow(), false},
		{"label namespace", &flowpb.FlowFilter{SourceLabel: []string{"k8s:io.kubernetes.pod.namespace=shop"}}, l4Flow(), true},
		{"principal label", &flowpb.FlowFilter{SourceLabel: []string{flowid.PrincipalLabel(webID)}}, l4Flow(), true},
		{"principal label other", &flowpb.FlowFilter{SourceLabel: []string{"weft:principal=spiffe://x"}}, l4Flow(), false},
		{"source identity", &flowpb.FlowFilter{SourceIdentity: []uint32{flowid.Identity(webID)}}, l4Flow(), true},
		{"destination identity miss", &flowpb.FlowFilter{DestinationIdentity: []uint32{flowid.Identity(webID)}}, l4Flow(), false},
		{"verdict", &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}, droppedFlow(), true},
		{"verdict miss", &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}, l4Flow(), false},
		{"drop reason", &flowpb.FlowFilter{DropReasonDesc: []flowpb.DropReason{flowpb.DropReason_POLICY_DENIED}}, droppedFlow(), true},
		{"event type l4", &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{Type: 4}}}, l4Flow(), true},
		{"event type l7 on l4", &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{Type: 129}}}, l4Flow(), false},
		{"event subtype", &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{Type: 4, MatchSubType: true, SubType: 3}}}, l4Flow(), false},
		{"destination port", &flowpb.FlowFilter{DestinationPort: []string{"5432"}}, l4Flow(), true},
		{"source port miss", &flowpb.FlowFilter{SourcePort: []string{"5432"}}, l4Flow(), false},
		{"protocol tcp", &flowpb.FlowFilter{Protocol: []string{"TCP"}}, l4Flow(), true},
		{"protocol udp", &flowpb.FlowFilter{Protocol: []string{"udp"}}, l4Flow(), false},
		{"protocol http", &flowpb.FlowFilter{Protocol: []string{"http"}}, httpFlow(), true},
		{"protocol http on l4", &flowpb.FlowFilter{Protocol: []string{"http"}}, l4Flow(), false},
		{"http status exact", &flowpb.FlowFilter{HttpStatusCode: []string{"503"}}, httpFlow(), true},
		{"http status prefix", &flowpb.FlowFilter{HttpStatusCode: []string{"5+"}}, httpFlow(), true},
		{"http status prefix miss", &flowpb.FlowFilter{HttpStatusCode: []string{"4+"}}, httpFlow(), false},
		{"http status on l4", &flowpb.FlowFilter{HttpStatusCode: []string{"5+"}}, l4Flow(), false},
		{"http method", &flowpb.FlowFilter{HttpMethod: []string{"get"}}, httpFlow(), true},
		{"http method miss", &flowpb.FlowFilter{HttpMethod: []string{"POST"}}, httpFlow(), false},
		{"http path regexp", &flowpb.FlowFilter{HttpPath: []string{"^/api/"}}, httpFlow(), true},
		{"http path excludes query", &flowpb.FlowFilter{HttpPath: []string{"x=1"}}, httpFlow(), false},
		{"http url", &flowpb.FlowFilter{HttpUrl: []string{"x=1$"}}, httpFlow(), true},
		{"http header", &flowpb.FlowFilter{HttpHeader: []*flowpb.HTTPHeader{{Key: "x-env", Value: "prod"}}}, httpFlow(), true},
		{"traffic direction", &flowpb.FlowFilter{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_EGRESS}}, l4Flow(), true},
		{"traffic direction miss", &flowpb.FlowFilter{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_INGRESS}}, l4Flow(), false},
		{"node name", &flowpb.FlowFilter{NodeName: []string{"node-a"}}, l4Flow(), true},
		{"node name glob", &flowpb.FlowFilter{NodeName: []string{"node-*"}}, l4Flow(), true},
		{"node name cluster", &flowpb.FlowFilter{NodeName: []string{"default/"}}, l4Flow(), true},
		{"node name miss", &flowpb.FlowFilter{NodeName: []string{"node-b"}}, l4Flow(), false},
		{"destination fqdn", &flowpb.FlowFilter{DestinationFqdn: []string{"*.shop.svc.cluster.local"}}, l4Flow(), true},
		{"source fqdn miss", &flowpb.FlowFilter{SourceFqdn: []string{"*.shop.svc.cluster.local"}}, l4Flow(), false},
		{"workload", &flowpb.FlowFilter{SourceWorkload: []*flowpb.Workload{{Name: "web"}}}, l4Flow(), true},
		{"workload kind miss", &flowpb.FlowFilter{SourceWorkload: []*flowpb.Workload{{Kind: "StatefulSet"}}}, l4Flow(), false},
		{"tcp flags", &flowpb.FlowFilter{TcpFlags: []*flowpb.TCPFlags{{SYN: true}}}, l4Flow(), true},
		{"tcp flags miss", &flowpb.FlowFilter{TcpFlags: []*flowpb.TCPFlags{{SYN: true, ACK: true}}}, l4Flow(), false},
		{"reply false", &flowpb.FlowFilter{Reply: []bool{false}}, l4Flow(), true},
		{"reply unknown on drop is false", &flowpb.FlowFilter{Reply: []bool{false}}, droppedFlow(), true},
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
		{"nothing passes all", nil, nil, l4Flow(), true},
		{"whitelist entries are ORed", []*flowpb.FlowFilter{dropped, shop}, nil, l4Flow(), true},
		{"whitelist miss", []*flowpb.FlowFilter{dropped}, nil, l4Flow(), false},
		{"blacklist removes", []*flowpb.FlowFilter{shop}, []*flowpb.FlowFilter{dropped}, droppedFlow(), false},
		{"blacklist alone", nil, []*flowpb.FlowFilter{dropped}, l4Flow(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := compileFilter(tt.whitelist, tt.blacklist)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.match(tt.flow); got != tt.want {
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
	flows := []*flowpb.Flow{l4Flow(), httpFlow(), droppedFlow(), {}}
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
