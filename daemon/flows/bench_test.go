package flows

import (
	"context"
	"github.com/weftmesh/weft/daemon/flows/internal/flowtest"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	flowsv1 "github.com/weftmesh/weft/api/flows/v1"
)

// BenchmarkAddWithFollower: Add while one follower reads everything.
func BenchmarkAddWithFollower(b *testing.B) {
	s := newTestServer(b, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.getFlows(ctx, &observerpb.GetFlowsRequest{Follow: true}, func(*observerpb.GetFlowsResponse) error { return nil })
	}()
	waitFor(b, func() bool { return gaugeValue(s.metrics.followers) == 1 })
	b.ResetTimer()
	for range b.N {
		s.Add(&flowpb.Flow{})
	}
	b.StopTimer()
	cancel()
	<-done
}

// BenchmarkExportUnix: records through the real FlowExport socket, in
// batches of 64, as ztunnel sends them; reports records/s.
func BenchmarkExportUnix(b *testing.B) {
	s := newTestServer(b, 4096)
	dir := b.TempDir()
	l, err := ListenUnix(dir + "/flows-export.sock")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.ServeExport(ctx, l) }()
	defer func() { cancel(); <-errc }()
	conn := dialUnixTB(b, dir+"/flows-export.sock")
	stream, err := flowsv1.NewFlowExportClient(conn).Export(ctx)
	if err != nil {
		b.Fatal(err)
	}
	const batch = 64
	before := counterValue(s.metrics.seen)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		req := &flowsv1.ExportRequest{Producer: "ztunnel"}
		for range min(batch, b.N-i) {
			req.Flows = append(req.Flows, flowtest.L4Flow())
		}
		if err := stream.Send(req); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got := counterValue(s.metrics.seen) - before; got != float64(b.N) {
		b.Fatalf("stored %v records, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
