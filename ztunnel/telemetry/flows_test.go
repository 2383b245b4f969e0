//lint:file-ignore SA1019 Hubble clients still print Flow.Summary (the hubble CLI's SUMMARY column) and older ones read drop_reason.

package telemetry

import (
	"errors"
	"hash/fnv"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/state"
)

// sink keeps the records it is given.
type sink struct {
	mu    sync.Mutex
	flows []*flow.Flow
}

func (s *sink) Record(f *flow.Flow) {
	s.mu.Lock()
	s.flows = append(s.flows, f)
	s.mu.Unlock()
}

func (s *sink) take(tb testing.TB, n int) []*flow.Flow {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.flows) != n {
		tb.Fatalf("got %d flow records, want %d", len(s.flows), n)
	}
	out := s.flows
	s.flows = nil
	return out
}

func newFlowMetrics(tb testing.TB) (*testMetrics, *sink) {
	tb.Helper()
	m := newTestMetrics(tb)
	s := &sink{}
	m.SetFlowSink(s)
	return m, s
}

// identity is api/flows/v1's identity of a SPIFFE ID, computed here from
// the contract (FNV-1a, |0x1000000) rather than with internal/flowid.
func identity(id spiffe.ID) uint32 {
	h := fnv.New32a()
	h.Write([]byte(id.String()))
	return h.Sum32() | 0x1000000
}

// Expected endpoints of the fixtures.
func webEndpoint() *flow.Endpoint {
	return &flow.Endpoint{
		Identity: identity(webID), Namespace: "shop", PodName: "web-7d9f8-abcde", ClusterName: "east",
		Labels: []string{
			"k8s:app=web",
			"k8s:io.cilium.k8s.policy.serviceaccount=web",
			"k8s:io.kubernetes.pod.namespace=shop",
			"k8s:version=v2.1",
			"weft:principal=spiffe://cluster.local/ns/shop/sa/web",
		},
		Workloads: []*flow.Workload{{Name: "web"}},
	}
}

func echoEndpoint() *flow.Endpoint {
	return &flow.Endpoint{
		Identity: identity(echoID), Namespace: "shop", PodName: "echo-5c4d-xyz12",
		Labels: []string{
			"k8s:io.cilium.k8s.policy.serviceaccount=echo",
			"k8s:io.kubernetes.pod.namespace=shop",
			"weft:principal=spiffe://cluster.local/ns/shop/sa/echo",
		},
	}
}

func worldEndpoint() *flow.Endpoint {
	return &flow.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func egressTrace() *flow.Flow {
	return &flow.Flow{
		Emitter:               &flow.Emitter{Name: "weft-ztunnel"},
		Type:                  flow.FlowType_L3_L4,
		IsReply:               wrapperspb.Bool(false),
		TrafficDirection:      flow.TrafficDirection_EGRESS,
		EventType:             &flow.CiliumEventType{Type: 4, SubType: 1},
		TraceObservationPoint: flow.TraceObservationPoint_TO_PROXY,
	}
}

func ingressTrace() *flow.Flow {
	return &flow.Flow{
		Emitter:               &flow.Emitter{Name: "weft-ztunnel"},
		Type:                  flow.FlowType_L3_L4,
		IsReply:               wrapperspb.Bool(false),
		TrafficDirection:      flow.TrafficDirection_INGRESS,
		EventType:             &flow.CiliumEventType{Type: 4, SubType: 0},
		TraceObservationPoint: flow.TraceObservationPoint_TO_ENDPOINT,
	}
}

func tcp(src, dst uint32, flags *flow.TCPFlags) *flow.Layer4 {
	return &flow.Layer4{Protocol: &flow.Layer4_TCP{TCP: &flow.TCP{SourcePort: src, DestinationPort: dst, Flags: flags}}}
}

// checkFlow compares got with want, and got's extensions with wantExt.
func checkFlow(tb testing.TB, name string, got, want *flow.Flow, wantExt map[string]any) {
	tb.Helper()
	ext := &structpb.Struct{}
	if got.GetExtensions() == nil {
		tb.Errorf("%s: no extensions", name)
	} else if err := got.GetExtensions().UnmarshalTo(ext); err != nil {
		tb.Errorf("%s: extensions are not a Struct: %v", name, err)
	}
	if wantStruct, err := structpb.NewStruct(wantExt); err != nil {
		tb.Fatalf("%s: bad wantExt: %v", name, err)
	} else if !proto.Equal(ext, wantStruct) {
		tb.Errorf("%s: extensions = %v, want %v", name, ext.AsMap(), wantExt)
	}
	got = proto.CloneOf(got)
	got.Extensions = nil
	if !proto.Equal(got, want) {
		o := protojson.MarshalOptions{Multiline: true}
		tb.Errorf("%s: flow =\n%s\nwant\n%s", name, o.Format(got), o.Format(want))
	}
	// Every record must survive the wire.
	if _, err := proto.Marshal(got); err != nil {
		tb.Errorf("%s: marshal: %v", name, err)
	}
}

// TestFlowsOutbound: an outbound mTLS connection through a Service gives an
// EGRESS open record (SYN) at open and an EGRESS close record (FIN, bytes
// from the client's point of view, duration) at close, both with the pod
// IPs, the app port and both identities.
func TestFlowsOutbound(t *testing.T) {
	m, s := newFlowMetrics(t)
	c := m.Open(outboundMTLS())
	open := s.take(t, 1)[0]
	c.Received(100) // client → server
	c.Sent(2000)
	m.clock.Advance(1500 * time.Millisecond)
	c.Close(FlagNone, nil)
	closed := s.take(t, 1)[0]

	want := egressTrace()
	want.Time = timestamppb.New(t0)
	want.Verdict = flow.Verdict_FORWARDED
	want.IP = &flow.IP{Source: "10.1.0.5", Destination: "10.1.1.7", IpVersion: flow.IPVersion_IPv4, Encrypted: true}
	want.L4 = tcp(40312, 8080, &flow.TCPFlags{SYN: true})
	want.Source, want.Destination = webEndpoint(), echoEndpoint()
	want.DestinationService = &flow.Service{Name: "echo", Namespace: "shop"}
	want.DestinationNames = []string{"echo.shop.svc.cluster.local"}
	want.Summary = "TCP Flags: SYN"
	principals := map[string]any{
		"source_principal":      "spiffe://cluster.local/ns/shop/sa/web",
		"destination_principal": "spiffe://cluster.local/ns/shop/sa/echo",
	}
	checkFlow(t, "open", open, want, with(principals, map[string]any{"event": "open"}))

	want.Time = timestamppb.New(t0.Add(1500 * time.Millisecond))
	want.L4 = tcp(40312, 8080, &flow.TCPFlags{FIN: true})
	want.Summary = "TCP Flags: FIN; 100 B sent, 2000 B received in 1.5s"
	checkFlow(t, "close", closed, want, with(principals, map[string]any{
		"event": "close", "bytes_sent": 100, "bytes_received": 2000, "duration_ns": 1.5e9,
	}))
}

// TestFlowsInboundDenied: a plaintext client from outside the cluster that
// a TrafficTarget refuses gives one INGRESS record: DROPPED, POLICY_DENIED,
// denied by that TrafficTarget, with the reason; the client is Cilium's
// reserved world.
func TestFlowsInboundDenied(t *testing.T) {
	m, s := newFlowMetrics(t)
	m.Denied(inboundPlaintext(), "shop/echo-from-web", "source not allowed by any TrafficTarget")
	got := s.take(t, 1)[0]

	want := ingressTrace()
	want.Time = timestamppb.New(t0)
	want.Verdict = flow.Verdict_DROPPED
	want.DropReason = 133
	want.DropReasonDesc = flow.DropReason_POLICY_DENIED
	want.EventType = &flow.CiliumEventType{Type: 1, SubType: 133}
	want.TraceObservationPoint = flow.TraceObservationPoint_UNKNOWN_POINT
	want.IngressDeniedBy = []*flow.Policy{{Kind: "TrafficTarget", Namespace: "shop", Name: "echo-from-web"}}
	want.IP = &flow.IP{Source: "192.168.9.9", Destination: "10.1.1.7", IpVersion: flow.IPVersion_IPv4}
	want.L4 = tcp(51000, 8080, &flow.TCPFlags{SYN: true})
	want.Source, want.Destination = worldEndpoint(), echoEndpoint()
	want.Summary = "TCP Flags: SYN; denied: source not allowed by any TrafficTarget"
	checkFlow(t, "deny", got, want, map[string]any{
		"event": "deny", "destination_principal": "spiffe://cluster.local/ns/shop/sa/echo",
		"reason": "source not allowed by any TrafficTarget", "response_flags": "DENY",
	})
}

// TestFlowsDeniedWithoutPolicy: a strict-mode denial names no policy.
func TestFlowsDeniedWithoutPolicy(t *testing.T) {
	m, s := newFlowMetrics(t)
	m.Denied(inboundPlaintext(), "strict-mode", "no policy selects the destination")
	got := s.take(t, 1)[0]
	if got.GetVerdict() != flow.Verdict_DROPPED || len(got.GetIngressDeniedBy()) != 0 {
		t.Errorf("verdict %v, ingress_denied_by %v; want DROPPED and none", got.GetVerdict(), got.GetIngressDeniedBy())
	}
}

// TestFlowsDeniedByPeer: the source side of a connection the destination
// refused gives an EGRESS DROPPED record with the destination's reason.
func TestFlowsDeniedByPeer(t *testing.T) {
	m, s := newFlowMetrics(t)
	m.DeniedByPeer(outboundMTLS(), "source not allowed", errors.New("hbone connect refused with status 403"))
	got := s.take(t, 1)[0]
	if got.GetTrafficDirection() != flow.TrafficDirection_EGRESS || got.GetVerdict() != flow.Verdict_DROPPED ||
		got.GetDropReasonDesc() != flow.DropReason_POLICY_DENIED {
		t.Errorf("direction %v, verdict %v, drop reason %v; want EGRESS, DROPPED, POLICY_DENIED",
			got.GetTrafficDirection(), got.GetVerdict(), got.GetDropReasonDesc())
	}
	ext := &structpb.Struct{}
	if err := got.GetExtensions().UnmarshalTo(ext); err != nil || ext.AsMap()["reason"] != "source not allowed" || ext.AsMap()["event"] != "deny" {
		t.Errorf("extensions = %v (%v), want event deny, reason %q", ext.AsMap(), err, "source not allowed")
	}
	if v := value(t, m.reg, "weft_ztunnel_connection_errors_total", nil); v != 1 {
		t.Errorf("weft_ztunnel_connection_errors_total = %v, want 1", v)
	}
}

// TestFlowsCloseReset: a connection an error ended (a reset, a policy
// change, the proxy's shutdown) closes with RST and the error as reason.
func TestFlowsCloseReset(t *testing.T) {
	tests := []struct {
		name       string
		flags      ResponseFlags
		err        error
		wantReason string
		wantFlags  string
	}{
		{"reset", FlagNone, syscall.ECONNRESET, "connection reset by peer", ""},
		{"policy change", FlagDenied, errors.New("closed by policy change: not allowed"), "closed by policy change: not allowed", "DENY"},
		{"shutdown", FlagNone, errors.New(ShutdownReason), "ztunnel shutting down", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, s := newFlowMetrics(t)
			c := m.Open(inboundPlaintext())
			s.take(t, 1)
			c.Close(tt.flags, tt.err)
			got := s.take(t, 1)[0]
			if f := got.GetL4().GetTCP().GetFlags(); !f.GetRST() || f.GetFIN() {
				t.Errorf("TCP flags = %v, want RST only", f)
			}
			if got.GetVerdict() != flow.Verdict_FORWARDED || got.GetTrafficDirection() != flow.TrafficDirection_INGRESS {
				t.Errorf("verdict %v, direction %v; want FORWARDED, INGRESS", got.GetVerdict(), got.GetTrafficDirection())
			}
			ext := &structpb.Struct{}
			if err := got.GetExtensions().UnmarshalTo(ext); err != nil {
				t.Fatal(err)
			}
			mp := ext.AsMap()
			if mp["event"] != "close" || mp["reason"] != tt.wantReason {
				t.Errorf("extensions = %v, want event close, reason %q", mp, tt.wantReason)
			}
			if f, _ := mp["response_flags"].(string); f != tt.wantFlags {
				t.Errorf("response_flags = %q, want %q", f, tt.wantFlags)
			}
		})
	}
}

// TestFlowsInvalidUTF8: a snapshot with bytes that are not UTF-8 still gives
// records that marshal (one that did not would cost its whole batch).
func TestFlowsInvalidUTF8(t *testing.T) {
	m, s := newFlowMetrics(t)
	bad := &state.Workload{Namespace: "shop", Name: "bad\xff", App: "a\xfe", WorkloadName: "w\xff"}
	info := ConnInfo{
		Reporter:    ReporterDestination,
		Source:      Peer{Workload: bad, Addr: netip.MustParseAddrPort("10.1.0.9:1234")},
		Destination: Peer{Workload: echoPod, Identity: echoID, Addr: netip.MustParseAddrPort("10.1.1.7:8080")},
	}
	m.Denied(info, "shop/x", "reason \xff")
	c := m.Open(info)
	c.Close(FlagNone, errors.New("err \xff"))
	for _, f := range s.take(t, 3) {
		if _, err := proto.Marshal(f); err != nil {
			t.Errorf("marshal %s record: %v", f.GetSummary(), err)
		}
	}
}

// TestFlowsVerifiedUnknownPeer: a peer with a verified identity but no
// workload in the state still shows its namespace and principal.
func TestFlowsVerifiedUnknownPeer(t *testing.T) {
	m, s := newFlowMetrics(t)
	info := outboundMTLS()
	info.Reporter = ReporterDestination
	info.Source.Workload = nil
	m.Open(info).Close(FlagNone, nil)
	got := s.take(t, 2)[0].GetSource()
	want := &flow.Endpoint{
		Identity: identity(webID), Namespace: "shop",
		Labels: []string{"k8s:io.kubernetes.pod.namespace=shop", "weft:principal=spiffe://cluster.local/ns/shop/sa/web"},
	}
	if !proto.Equal(got, want) {
		t.Errorf("source = %v, want %v", got, want)
	}
}

func with(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// TestCertExpiry: the gauge shows each issued certificate's expiry, per
// identity, as the certificates are at scrape time.
func TestCertExpiry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var certs []CertExpiry
	if err := RegisterCertExpiry(reg, func() []CertExpiry { return certs }); err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)
	certs = []CertExpiry{
		{Identity: webID.String(), NotAfter: exp},
		{Identity: echoID.String()}, // not issued yet
	}
	got := gathered(t, reg, "weft_ztunnel_cert_expiry_timestamp_seconds")
	if len(got) != 1 || got[0].labels["identity"] != webID.String() || got[0].value != float64(exp.Unix()) {
		t.Errorf("series = %v, want one for %s at %d", got, webID, exp.Unix())
	}
	certs[0].NotAfter = exp.Add(time.Hour) // renewed
	if v := value(t, reg, "weft_ztunnel_cert_expiry_timestamp_seconds", nil); v != float64(exp.Add(time.Hour).Unix()) {
		t.Errorf("after renewal = %v, want %d", v, exp.Add(time.Hour).Unix())
	}
}
