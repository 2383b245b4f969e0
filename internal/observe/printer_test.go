//lint:file-ignore SA1019 the fixtures set Flow.Summary and drop_reason as weft's ztunnel does.
package observe

import (
	"bytes"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/flowid"

	"github.com/weftmesh/weft/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 123_000_000, time.UTC)

const (
	webID = "spiffe://cluster.local/ns/shop/sa/web"
	apiID = "spiffe://cluster.local/ns/shop/sa/api"
)

func ext(t testing.TB, m map[string]any) *anypb.Any {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func endpoint(ns, pod, principal string) *flowpb.Endpoint {
	ep := &flowpb.Endpoint{Namespace: ns, PodName: pod, Labels: []string{"k8s:app=" + pod, "k8s:io.kubernetes.pod.namespace=" + ns}}
	if principal != "" {
		ep.Labels = append(ep.Labels, flowid.PrincipalLabel(principal))
		ep.Identity = flowid.Identity(principal)
	}
	return ep
}

func tcpFlow(at time.Duration, flags *flowpb.TCPFlags) *flowpb.Flow {
	return &flowpb.Flow{
		Time:             timestamppb.New(t0.Add(at)),
		NodeName:         "node-1",
		Verdict:          flowpb.Verdict_FORWARDED,
		IP:               &flowpb.IP{Source: "10.0.1.5", Destination: "10.0.2.7", IpVersion: flowpb.IPVersion_IPv4},
		L4:               &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40512, DestinationPort: 8080, Flags: flags}}},
		Source:           endpoint("shop", "web-7d9f-abcde", webID),
		Destination:      endpoint("shop", "api-5c4b-fghij", apiID),
		Type:             flowpb.FlowType_L3_L4,
		EventType:        &flowpb.CiliumEventType{Type: 4},
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		IsReply:          wrapperspb.Bool(false),
		Emitter:          &flowpb.Emitter{Name: "weft-ztunnel"},
	}
}

// fixtures are one of each flow weft produces: an L4 open and close, a
// policy denial, an HTTP request and response, a flow from an unmeshed
// client with an unknown direction, and lost events.
func fixtures(t testing.TB) []*observerpb.GetFlowsResponse {
	open := tcpFlow(0, &flowpb.TCPFlags{SYN: true})
	open.Extensions = ext(t, map[string]any{"event": "open", "source_principal": webID, "destination_principal": apiID})

	// A close as weft's ztunnel writes it (its own summary).
	closed := tcpFlow(1500*time.Millisecond, &flowpb.TCPFlags{FIN: true})
	closed.Summary = "TCP Flags: FIN; 1234 B sent, 56789 B received in 1.5s"
	closed.Extensions = ext(t, map[string]any{
		"event": "close", "source_principal": webID, "destination_principal": apiID,
		"bytes_sent": 1234, "bytes_received": 56789, "duration_ns": 1_500_000_000, "response_flags": "-",
	})

	// A denial as weft's ztunnel writes it: a drop event, its summary
	// naming the reason but not the policy.
	denied := tcpFlow(2*time.Second, &flowpb.TCPFlags{SYN: true})
	denied.NodeName = "node-2"
	denied.Verdict = flowpb.Verdict_DROPPED
	denied.DropReason = 133
	denied.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
	denied.EventType = &flowpb.CiliumEventType{Type: 1, SubType: 133}
	denied.Summary = "TCP Flags: SYN; denied: no TrafficTarget allows spiffe://cluster.local/ns/shop/sa/batch"
	denied.TrafficDirection = flowpb.TrafficDirection_INGRESS
	denied.Source = endpoint("shop", "batch-1", "spiffe://cluster.local/ns/shop/sa/batch")
	denied.IP.Source = "10.0.1.9"
	denied.IngressDeniedBy = []*flowpb.Policy{{Kind: "TrafficTarget", Name: "api-from-web", Namespace: "shop"}}
	denied.Extensions = ext(t, map[string]any{
		"event": "deny", "source_principal": "spiffe://cluster.local/ns/shop/sa/batch", "destination_principal": apiID,
		"reason": "no TrafficTarget allows spiffe://cluster.local/ns/shop/sa/batch", "response_flags": "DENY",
	})

	// A reset without a summary: weft's facts come from the extensions.
	reset := tcpFlow(2500*time.Millisecond, &flowpb.TCPFlags{RST: true})
	reset.Extensions = ext(t, map[string]any{"event": "close", "bytes_sent": 10, "bytes_received": 0,
		"duration_ns": 2_000_000, "reason": "connection reset by peer", "response_flags": "UC"})

	req := tcpFlow(3*time.Second, nil)
	req.EventType = &flowpb.CiliumEventType{Type: 129}
	req.Type = flowpb.FlowType_L7
	req.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
		Method: "GET", Url: "http://api.shop:8080/v1/items?id=3", Protocol: "HTTP/1.1"}}}
	resp := tcpFlow(3*time.Second+12*time.Millisecond, nil)
	resp.EventType = &flowpb.CiliumEventType{Type: 129}
	resp.Type = flowpb.FlowType_L7
	resp.IsReply = wrapperspb.Bool(true)
	resp.Source, resp.Destination = resp.Destination, resp.Source
	resp.IP.Source, resp.IP.Destination = resp.IP.Destination, resp.IP.Source
	resp.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 8080, DestinationPort: 40512}}}
	resp.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: 12_345_678, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
		Code: 503, Method: "GET", Url: "http://api.shop:8080/v1/items?id=3", Protocol: "HTTP/1.1"}}}

	// An unmeshed client (no principal, reserved identity "world"), the
	// server's own summary, no direction, and a pod name carrying a
	// terminal escape (printed harmless).
	plain := tcpFlow(4*time.Second, &flowpb.TCPFlags{SYN: true, ACK: true})
	plain.IsReply = nil
	plain.Source = &flowpb.Endpoint{Identity: 2}
	plain.Destination = endpoint("shop", "api-\x1b[2J", "")
	plain.Destination.Identity = 16777300
	plain.Summary = "TCP Flags: SYN, ACK"

	lost := &observerpb.GetFlowsResponse{
		Time:     timestamppb.New(t0.Add(5 * time.Second)),
		NodeName: "node-2",
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: 123, Cpu: wrapperspb.Int32(0),
		}},
	}
	var out []*observerpb.GetFlowsResponse
	for _, f := range []*flowpb.Flow{open, closed, denied, reset, req, resp, plain} {
		out = append(out, &observerpb.GetFlowsResponse{Time: f.Time, NodeName: f.NodeName, ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}})
	}
	return append(out, lost)
}

func TestPrinterGolden(t *testing.T) {
	tests := []struct {
		name string
		opts PrinterOptions
	}{
		{"compact", PrinterOptions{Format: Compact}},
		{"compact-node", PrinterOptions{Format: Compact, NodeName: true}},
		{"compact-color", PrinterOptions{Format: Compact, Color: true}},
		{"table", PrinterOptions{Format: Table, NodeName: true, Color: true}}, // a table never has colours
		{"dict", PrinterOptions{Format: Dict, NodeName: true}},
		{"json", PrinterOptions{Format: JSON, Color: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			tt.opts.Location = time.UTC
			p := NewPrinter(&out, &errOut, tt.opts)
			for _, res := range fixtures(t) {
				if err := p.Write(res); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Flush(); err != nil {
				t.Fatal(err)
			}
			if errOut.Len() != 0 {
				t.Errorf("stderr = %q, want nothing", errOut.String())
			}
			golden(t, filepath.Join("testdata", tt.name+".golden"), out.String())
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	testutil.Golden(t, path, got, *update)
}

// TestJSONRoundTrip: -o json lines are GetFlowsResponses that Hubble's
// own types parse back, extensions included.
func TestJSONRoundTrip(t *testing.T) {
	var out bytes.Buffer
	p := NewPrinter(&out, &out, PrinterOptions{Format: JSON})
	want := fixtures(t)
	for _, res := range want {
		if err := p.Write(res); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("-o json wrote %d lines, want %d", len(lines), len(want))
	}
	for i, line := range lines {
		var got observerpb.GetFlowsResponse
		if err := got.UnmarshalJSON([]byte(line)); err != nil {
			t.Fatalf("line %d %q: %v", i, line, err)
		}
		if got.String() != want[i].String() {
			t.Errorf("line %d parses to %v, want %v", i, &got, want[i])
		}
	}
}
