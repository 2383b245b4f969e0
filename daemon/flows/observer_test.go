package flows

import (
	"context"
	"errors"
	"fmt"
	"github.com/weftmesh/weft/daemon/flows/internal/flowtest"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowsv1 "github.com/weftmesh/weft/api/flows/v1"
)

func newTestServer(tb testing.TB, ringSize int) *Server {
	tb.Helper()
	s, err := New(Config{NodeName: "node-a", RingSize: ringSize, Version: "v1.2.3"})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// numbered is a flow from pod shop/p<i> at base+i seconds.
func numbered(i int, base time.Time) *flowpb.Flow {
	f := flowtest.L4Flow()
	f.Uuid = ""
	f.Source.PodName = fmt.Sprintf("p%d", i)
	f.Time = timestamppb.New(base.Add(time.Duration(i) * time.Second))
	if i%2 == 1 {
		f.Verdict = flowpb.Verdict_DROPPED
	}
	return f
}

// collect runs a non-follow GetFlows and returns what it sent, flows as
// their source pod names and lost events as "lost:<source>:<n>".
func collect(t *testing.T, s *Server, req *observerpb.GetFlowsRequest) []string {
	t.Helper()
	var got []string
	err := s.getFlows(context.Background(), req, func(r *observerpb.GetFlowsResponse) error {
		got = append(got, describe(r))
		return nil
	})
	if err != nil {
		t.Fatalf("getFlows(%v): %v", req, err)
	}
	return got
}

func describe(r *observerpb.GetFlowsResponse) string {
	if le := r.GetLostEvents(); le != nil {
		return fmt.Sprintf("lost:%s:%d", le.GetSource(), le.GetNumEventsLost())
	}
	return r.GetFlow().GetSource().GetPodName()
}

func TestGetFlowsSelection(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	s := newTestServer(t, 16)
	for i := range 10 {
		s.Add(numbered(i, base))
	}
	dropped := []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}
	tests := []struct {
		name string
		req  *observerpb.GetFlowsRequest
		want string
	}{
		{"all", &observerpb.GetFlowsRequest{}, "p0 p1 p2 p3 p4 p5 p6 p7 p8 p9"},
		{"last 3", &observerpb.GetFlowsRequest{Number: 3}, "p7 p8 p9"},
		{"last 3 dropped", &observerpb.GetFlowsRequest{Number: 3, Whitelist: dropped}, "p5 p7 p9"},
		{"last 3 not dropped", &observerpb.GetFlowsRequest{Number: 3, Blacklist: dropped}, "p4 p6 p8"},
		{"last more than stored", &observerpb.GetFlowsRequest{Number: 50, Whitelist: dropped}, "p1 p3 p5 p7 p9"},
		{"first 2", &observerpb.GetFlowsRequest{Number: 2, First: true}, "p0 p1"},
		{"first 2 dropped", &observerpb.GetFlowsRequest{Number: 2, First: true, Whitelist: dropped}, "p1 p3"},
		{"since", &observerpb.GetFlowsRequest{Since: timestamppb.New(base.Add(7 * time.Second))}, "p7 p8 p9"},
		{"until", &observerpb.GetFlowsRequest{Until: timestamppb.New(base.Add(2 * time.Second))}, "p0 p1 p2"},
		{"since until", &observerpb.GetFlowsRequest{
			Since: timestamppb.New(base.Add(3 * time.Second)), Until: timestamppb.New(base.Add(5 * time.Second)),
		}, "p3 p4 p5"},
		{"since limited by number", &observerpb.GetFlowsRequest{Number: 1, Since: timestamppb.New(base.Add(3 * time.Second))}, "p3"},
		{"pod filter", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"shop/p1"}}}}, "p1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fmt.Sprint(collect(t, s, tt.req))
			if want := "[" + tt.want + "]"; got != want {
				t.Errorf("GetFlows(%v) = %s, want %s", tt.req, got, want)
			}
		})
	}
}

func TestGetFlowsRejectsBadRequests(t *testing.T) {
	s := newTestServer(t, 4)
	for name, req := range map[string]*observerpb.GetFlowsRequest{
		"first with follow": {First: true, Follow: true},
		"bad filter":        {Whitelist: []*flowpb.FlowFilter{{SourceIp: []string{"x"}}}},
		"bad blacklist":     {Blacklist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"99"}}}},
		"bad mask":          {FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.nope"}}},
		"mask into list":    {FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.workloads.name"}}},
		"bad since":         {Since: &timestamppb.Timestamp{Seconds: -1 << 62}},
	} {
		t.Run(name, func(t *testing.T) {
			err := s.getFlows(context.Background(), req, func(*observerpb.GetFlowsResponse) error { return nil })
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("getFlows(%v) = %v, want InvalidArgument", req, err)
			}
		})
	}
}

func TestGetFlowsDeliversLossesWhateverTheFilter(t *testing.T) {
	s := newTestServer(t, 16)
	base := time.Now()
	s.Add(numbered(0, base))
	s.export(&flowsv1.ExportRequest{Lost: 42, Producer: "ztunnel", Flows: []*flowpb.Flow{numbered(1, base)}})
	got := fmt.Sprint(collect(t, s, &observerpb.GetFlowsRequest{
		Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"nobody/"}}},
	}))
	if want := "[lost:OBSERVER_EVENTS_QUEUE:42]"; got != want {
		t.Errorf("GetFlows with a filter matching no flow = %s, want %s", got, want)
	}
}

func TestExportStampsFlows(t *testing.T) {
	s := newTestServer(t, 16)
	withEmitter := flowtest.L4Flow()
	withEmitter.Emitter = &flowpb.Emitter{Name: "custom"}
	withEmitter.NodeName = "someone-else"
	s.export(&flowsv1.ExportRequest{Producer: "waypoint/shop/wp", Flows: []*flowpb.Flow{{}, withEmitter}})
	var got []*flowpb.Flow
	s.getFlows(context.Background(), &observerpb.GetFlowsRequest{}, func(r *observerpb.GetFlowsResponse) error {
		got = append(got, r.GetFlow())
		if r.GetNodeName() != "node-a" || r.GetTime() == nil {
			t.Errorf("response node %q time %v, want node-a and a time", r.GetNodeName(), r.GetTime())
		}
		return nil
	})
	if len(got) != 2 {
		t.Fatalf("got %d flows, want 2", len(got))
	}
	if e := got[0].GetEmitter().GetName(); e != "weft-waypoint" {
		t.Errorf("emitter = %q, want weft-waypoint", e)
	}
	if e := got[1].GetEmitter().GetName(); e != "custom" {
		t.Errorf("emitter = %q, want the producer's own", e)
	}
	for _, f := range got {
		if f.GetNodeName() != "node-a" || f.GetTime() == nil || f.GetUuid() == "" {
			t.Errorf("flow node %q time %v uuid %q, want node-a, a time and a uuid", f.GetNodeName(), f.GetTime(), f.GetUuid())
		}
	}
	if u := got[0].GetUuid(); len(u) != 36 || u[14] != '4' {
		t.Errorf("stamped uuid = %q, want a version 4 uuid", u)
	}
	if u := got[1].GetUuid(); u != "u-1" {
		t.Errorf("uuid = %q, want the producer's own u-1", u)
	}
}

func TestFieldMask(t *testing.T) {
	s := newTestServer(t, 4)
	s.Add(flowtest.L4Flow())
	paths := []string{"time", "verdict", "source.pod_name", "source.identity", "l4", "IP", "node_name", "source"}
	var got *flowpb.Flow
	s.getFlows(context.Background(), &observerpb.GetFlowsRequest{
		FieldMask: &fieldmaskpb.FieldMask{Paths: paths[:7]},
	}, func(r *observerpb.GetFlowsResponse) error { got = r.GetFlow(); return nil })
	full := flowtest.L4Flow()
	want := &flowpb.Flow{
		Time: got.GetTime(), Verdict: full.Verdict, NodeName: "node-a", L4: full.L4, IP: full.IP,
		Source: &flowpb.Endpoint{PodName: full.Source.PodName, Identity: full.Source.Identity},
	}
	if got.GetTime() == nil || !proto.Equal(got, want) {
		t.Errorf("masked flow = %v\nwant %v", got, want)
	}

	// A whole message and one of its fields: the whole message.
	s.getFlows(context.Background(), &observerpb.GetFlowsRequest{
		FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.pod_name", "source"}},
	}, func(r *observerpb.GetFlowsResponse) error { got = r.GetFlow(); return nil })
	if want := (&flowpb.Flow{Source: full.Source}); !proto.Equal(got, want) {
		t.Errorf("masked flow = %v\nwant %v", got, want)
	}

	// The stored flow is untouched by masking.
	s.getFlows(context.Background(), &observerpb.GetFlowsRequest{}, func(r *observerpb.GetFlowsResponse) error { got = r.GetFlow(); return nil })
	if got.GetDestination().GetPodName() != "db-0" || got.GetUuid() != "u-1" {
		t.Errorf("unmasked flow after masking = %v, want the whole flow", got)
	}
}

// TestFollowSeesNewFlowsAndLapsExactly: a follower whose sends block falls
// behind a fast writer; it is told exactly what it missed.
func TestFollowSeesNewFlowsAndLapsExactly(t *testing.T) {
	s := newTestServer(t, 8)
	s.Add(numbered(0, time.Now())) // before the request: not followed
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resps := make(chan *observerpb.GetFlowsResponse)
	errc := make(chan error, 1)
	go func() {
		errc <- s.getFlows(ctx, &observerpb.GetFlowsRequest{Follow: true}, func(r *observerpb.GetFlowsResponse) error {
			select {
			case resps <- r:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	// The follower starts at the end; wait until it is following.
	waitFor(t, func() bool { return gaugeValue(s.metrics.followers) == 1 })
	s.Add(numbered(1, time.Now()))
	if got := describe(<-resps); got != "p1" {
		t.Fatalf("first followed response = %s, want p1", got)
	}
	// The follower now blocks in send (nobody reads resps) with at most
	// one batch copied out; write far more than the ring holds.
	const produced = 1000
	for i := range produced {
		s.Add(numbered(2+i, time.Now()))
	}
	s.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 5)
	var flows, lost uint64
	for flows+lost < produced+5 {
		var r *observerpb.GetFlowsResponse
		select {
		case r = <-resps:
		case <-time.After(10 * time.Second):
			t.Fatalf("follower stalled after %d flows + %d lost of %d", flows, lost, produced+5)
		}
		if le := r.GetLostEvents(); le != nil {
			lost += le.GetNumEventsLost()
		} else {
			flows++
		}
	}
	if flows+lost != produced+5 || lost < produced/2 {
		t.Errorf("follower got %d flows + %d lost, want %d in all, most of them lost", flows, lost, produced+5)
	}
	if got := counterValue(s.metrics.lost.WithLabelValues("hubble_ring_buffer")); got == 0 {
		t.Errorf("weft_agent_flows_lost_total{reason=hubble_ring_buffer} = 0 after lapping")
	}
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Errorf("getFlows after cancel = %v, want Canceled", err)
	}
	if got := gaugeValue(s.metrics.followers); got != 0 {
		t.Errorf("followers = %v after the follower ended, want 0", got)
	}
}

func TestFollowLastN(t *testing.T) {
	s := newTestServer(t, 8)
	for i := range 5 {
		s.Add(numbered(i, time.Now()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var got []string
	err := s.getFlows(ctx, &observerpb.GetFlowsRequest{Follow: true, Number: 2}, func(r *observerpb.GetFlowsResponse) error {
		got = append(got, describe(r))
		switch len(got) {
		case 2:
			s.Add(numbered(9, time.Now()))
		case 3:
			cancel()
		}
		return nil
	})
	if !errors.Is(err, status.FromContextError(context.Canceled).Err()) && status.Code(err) != codes.Canceled {
		t.Errorf("getFlows = %v, want Canceled", err)
	}
	if fmt.Sprint(got) != "[p3 p4 p9]" {
		t.Errorf("follow last 2 = %v, want [p3 p4 p9]", got)
	}
}

func TestServerStatusAndNodes(t *testing.T) {
	s := newTestServer(t, 4)
	for i := range 6 {
		s.Add(numbered(i, time.Now().Add(-10*time.Second)))
	}
	st := s.serverStatus(time.Now())
	if st.NumFlows != 4 || st.MaxFlows != 4 || st.SeenFlows != 6 || st.GetNumConnectedNodes().GetValue() != 1 || st.Version != "weft/v1.2.3" || st.UptimeNs == 0 {
		t.Errorf("ServerStatus = %v, want 4 of 4 flows, 6 seen, 1 node, weft/v1.2.3", st)
	}
	if st.FlowsRate <= 0 {
		t.Errorf("flows rate = %v, want > 0", st.FlowsRate)
	}
	nodes := s.nodes().GetNodes()
	if len(nodes) != 1 || nodes[0].GetName() != "node-a" || nodes[0].GetState().String() != "NODE_CONNECTED" || nodes[0].GetTls().GetEnabled() {
		t.Errorf("GetNodes = %v, want node-a connected without tls", nodes)
	}
	ns := s.namespaces(time.Now()).GetNamespaces()
	if len(ns) != 1 || ns[0].GetNamespace() != "shop" {
		t.Errorf("GetNamespaces = %v, want [shop]", ns)
	}
}
