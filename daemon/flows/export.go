package flows

import (
	"errors"
	"io"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/grpc"

	flowsv1 "github.com/weftmesh/weft/api/flows/v1"
)

// exportServer implements FlowExport (api/flows/v1) over a Server.
type exportServer struct {
	flowsv1.UnimplementedFlowExportServer
	s *Server
}

func (x exportServer) Export(stream grpc.ClientStreamingServer[flowsv1.ExportRequest, flowsv1.ExportResponse]) error {
	x.s.metrics.exporters.Inc()
	defer x.s.metrics.exporters.Dec()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&flowsv1.ExportResponse{})
		}
		if err != nil {
			return err
		}
		x.s.export(req)
	}
}

// export stores one ExportRequest: first its loss (records lost before
// the batch), then its flows in order.
func (s *Server) export(req *flowsv1.ExportRequest) {
	s.AddLost(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, req.GetLost())
	emitter := emitterName(req.GetProducer())
	for _, f := range req.GetFlows() {
		if f == nil {
			continue
		}
		if f.Emitter == nil {
			f.Emitter = &flowpb.Emitter{Name: emitter}
		}
		s.Add(f)
	}
}

// emitterName names a producer's flows when it did not: "weft-ztunnel" for
// producer "ztunnel", "weft-waypoint" for "waypoint/<ns>/<name>".
func emitterName(producer string) string {
	kind, _, _ := strings.Cut(producer, "/")
	if kind == "" {
		kind = "unknown"
	}
	return "weft-" + kind
}
