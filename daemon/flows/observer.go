package flows

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/daemon/flows/filter"
)

// readBatch is how many entries a reader copies out of the ring at a time.
const readBatch = 256

// observer implements Hubble's Observer service over a Server.
type observer struct {
	observerpb.UnimplementedObserverServer
	s *Server
	// stop ends with the listener: following streams then end cleanly.
	stop context.Context
}

func (o observer) GetFlows(req *observerpb.GetFlowsRequest, stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(o.stop, cancel)()
	err := o.s.getFlows(ctx, req, stream.Send)
	if o.stop.Err() != nil && status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

func (o observer) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	return o.s.serverStatus(time.Now()), nil
}

func (o observer) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	return o.s.nodes(), nil
}

func (o observer) GetNamespaces(context.Context, *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
	return o.s.namespaces(time.Now()), nil
}

// flowsQuery is a compiled GetFlowsRequest.
type flowsQuery struct {
	filter       filter.Filter
	mask         *mask
	since, until *time.Time
	number       uint64
	first        bool
	follow       bool
}

func compileQuery(req *observerpb.GetFlowsRequest) (flowsQuery, error) {
	q := flowsQuery{number: req.GetNumber(), first: req.GetFirst(), follow: req.GetFollow()}
	if q.first && q.follow {
		return q, fmt.Errorf("first cannot be specified with follow")
	}
	var err error
	if q.filter, err = filter.Compile(req.GetWhitelist(), req.GetBlacklist()); err != nil {
		return q, err
	}
	if q.mask, err = compileMask(req.GetFieldMask()); err != nil {
		return q, err
	}
	for _, t := range []struct {
		ts  *timestamppb.Timestamp
		out **time.Time
	}{{req.GetSince(), &q.since}, {req.GetUntil(), &q.until}} {
		if t.ts == nil {
			continue
		}
		if err := t.ts.CheckValid(); err != nil {
			return q, fmt.Errorf("invalid time: %w", err)
		}
		v := t.ts.AsTime()
		*t.out = &v
	}
	return q, nil
}

// inTime reports whether f is within q's since; afterUntil whether it is
// past q's until.
func (q *flowsQuery) inTime(f *flowpb.Flow) bool {
	return q.since == nil || !f.GetTime().AsTime().Before(*q.since)
}

func (q *flowsQuery) afterUntil(f *flowpb.Flow) bool {
	return q.until != nil && f.GetTime().AsTime().After(*q.until)
}

// getFlows serves one GetFlows request, calling send for each response, in
// Hubble's semantics: number (the last N, or the first N with first),
// follow, since/until, whitelist/blacklist and the field mask, all applied
// here. Losses always reach the reader, whatever the filters: the
// producers' (as stored) and the reader's own, when the ring overwrote
// entries before it read them.
func (s *Server) getFlows(ctx context.Context, req *observerpb.GetFlowsRequest, send func(*observerpb.GetFlowsResponse) error) error {
	q, err := compileQuery(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	end := cursor{seq: math.MaxUint64}
	if !q.follow {
		end = s.ring.end()
	}
	c := s.start(&q, end)
	limit := q.number
	if q.follow {
		limit = 0
		s.metrics.followers.Inc()
		defer s.metrics.followers.Dec()
	}
	var sent uint64
	buf := make([]entry, readBatch)
	for {
		n, skipped, wake := s.ring.read(&c, buf, end)
		if !skipped.zero() {
			for _, le := range s.lapped(skipped) {
				if err := send(s.lostResponse(le)); err != nil {
					return err
				}
			}
		}
		for i := range buf[:n] {
			e := &buf[i]
			if e.lost != nil {
				if err := send(s.lostResponse(e.lost)); err != nil {
					return err
				}
				continue
			}
			f := e.flow
			if q.afterUntil(f) {
				return nil
			}
			if !q.inTime(f) || !q.filter.Match(f) {
				continue
			}
			out := q.mask.apply(f)
			if err := send(&observerpb.GetFlowsResponse{
				ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: out},
				NodeName:      f.GetNodeName(),
				Time:          f.GetTime(),
			}); err != nil {
				return err
			}
			sent++
			if limit > 0 && sent >= limit {
				return nil
			}
		}
		clear(buf[:n])
		if n == 0 {
			if wake == nil {
				return nil // reached the end of a non-follow request
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
	}
}

// start is where a request starts reading: since and first read the whole
// ring, follow alone starts at its end, number (last N) at the Nth newest
// matching flow before end.
func (s *Server) start(q *flowsQuery, end cursor) cursor {
	switch {
	case q.since != nil, q.first:
		return s.ring.oldest()
	case q.number == 0 && q.follow:
		return s.ring.end()
	case q.number == 0:
		return s.ring.oldest()
	}
	if q.follow {
		end = s.ring.end()
	}
	start := end
	var count uint64
	buf := make([]entry, readBatch)
	for seq := end.seq; ; {
		n, first := s.ring.readBack(seq, buf)
		if n == 0 {
			return start
		}
		for i := n - 1; i >= 0; i-- {
			e := &buf[i]
			start = cursor{seq: first + uint64(i), at: e.before}
			if e.flow != nil && !q.afterUntil(e.flow) && q.filter.Match(e.flow) {
				if count++; count == q.number {
					return start
				}
			}
		}
		clear(buf[:n])
		seq = first
	}
}

// lapped are the LostEvents for what a reader skipped, and counts them.
func (s *Server) lapped(t tally) []*flowpb.LostEvent {
	now := timestamppb.Now()
	var out []*flowpb.LostEvent
	if t.flows > 0 {
		out = append(out, &flowpb.LostEvent{
			Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: t.flows, First: now, Last: now,
		})
		s.metrics.lost.WithLabelValues(lostReason(flowpb.LostEventSource_HUBBLE_RING_BUFFER)).Add(float64(t.flows))
	}
	for src, n := range t.lost {
		if n > 0 {
			out = append(out, &flowpb.LostEvent{Source: flowpb.LostEventSource(src), NumEventsLost: n, First: now, Last: now})
		}
	}
	return out
}

func (s *Server) lostResponse(le *flowpb.LostEvent) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: le},
		NodeName:      s.nodeName,
		Time:          le.GetLast(),
	}
}

func (s *Server) serverStatus(now time.Time) *observerpb.ServerStatusResponse {
	stored, capacity, seen := s.ring.stats()
	return &observerpb.ServerStatusResponse{
		NumFlows:            uint64(stored),
		MaxFlows:            uint64(capacity),
		SeenFlows:           seen,
		UptimeNs:            uint64(now.Sub(s.started).Nanoseconds()),
		NumConnectedNodes:   wrapperspb.UInt32(1),
		NumUnavailableNodes: wrapperspb.UInt32(0),
		Version:             s.version,
		FlowsRate:           s.flowsRate(now),
	}
}

// flowsRate is the rate of flows per second over the last minute, from the
// times of the stored flows; over less than a minute when the ring holds
// less (then its oldest flow starts the window).
func (s *Server) flowsRate(now time.Time) float64 {
	const window = time.Minute
	from := now.Add(-window)
	var count int
	oldest := now
	buf := make([]entry, readBatch)
	for seq := s.ring.end().seq; ; {
		n, first := s.ring.readBack(seq, buf)
		if n == 0 {
			break
		}
		for i := n - 1; i >= 0; i-- {
			f := buf[i].flow
			if f == nil {
				continue
			}
			t := f.GetTime().AsTime()
			if t.Before(from) {
				return float64(count) / window.Seconds()
			}
			count++
			oldest = t
		}
		if first == 0 {
			// The ring holds everything since the start.
			return float64(count) / window.Seconds()
		}
		seq = first
	}
	// The ring does not reach back a whole minute: its oldest flow starts
	// the window.
	return float64(count) / max(now.Sub(oldest), time.Second).Seconds()
}

func (s *Server) nodes() *observerpb.GetNodesResponse {
	stored, capacity, seen := s.ring.stats()
	n := &observerpb.Node{
		Name:      s.nodeName,
		Version:   s.version,
		Address:   s.address,
		State:     relaypb.NodeState_NODE_CONNECTED,
		Tls:       &observerpb.TLS{},
		UptimeNs:  uint64(time.Since(s.started).Nanoseconds()),
		NumFlows:  uint64(stored),
		MaxFlows:  uint64(capacity),
		SeenFlows: seen,
	}
	if name := s.tlsServerName.Load(); name != nil {
		n.Tls = &observerpb.TLS{Enabled: true, ServerName: *name}
	}
	return &observerpb.GetNodesResponse{Nodes: []*observerpb.Node{n}}
}

// namespaces are the namespaces of the stored flows of the last hour,
// sorted, as Hubble's GetNamespaces.
func (s *Server) namespaces(now time.Time) *observerpb.GetNamespacesResponse {
	from := now.Add(-time.Hour)
	seen := map[string]bool{}
	buf := make([]entry, readBatch)
	for seq := s.ring.end().seq; ; {
		n, first := s.ring.readBack(seq, buf)
		if n == 0 {
			break
		}
		for _, e := range buf[:n] {
			if f := e.flow; f != nil && !f.GetTime().AsTime().Before(from) {
				for _, ns := range []string{f.GetSource().GetNamespace(), f.GetDestination().GetNamespace()} {
					if ns != "" {
						seen[ns] = true
					}
				}
			}
		}
		seq = first
	}
	resp := &observerpb.GetNamespacesResponse{}
	for ns := range seen {
		resp.Namespaces = append(resp.Namespaces, &observerpb.Namespace{Namespace: ns})
	}
	slices.SortFunc(resp.Namespaces, func(a, b *observerpb.Namespace) int { return cmp.Compare(a.Namespace, b.Namespace) })
	return resp
}
