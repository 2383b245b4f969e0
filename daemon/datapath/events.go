package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/bpf/redirect"
)

// EmitterName is the Emitter of the flows the datapath reports.
const EmitterName = "weft-datapath"

// lostPollInterval is how often RunEvents checks the lost-events counter.
const lostPollInterval = time.Second

// FlowSink receives the datapath's flows; *flows.Server implements it.
type FlowSink interface {
	Add(f *flowpb.Flow)
	AddLost(source flowpb.LostEventSource, n uint64)
}

// RunEvents reads the datapath's events (connections it gave up on:
// assignment drops and redirect errors) until ctx ends and passes each to
// sink as a Hubble flow. Events that did not fit in the kernel ring buffer
// are reported with sink.AddLost(PERF_EVENT_RING_BUFFER, n) as they are
// counted (polled every second). Call it once per BPF. It returns nil when
// ctx ends.
func (b *BPF) RunEvents(ctx context.Context, sink FlowSink, log *slog.Logger) error {
	rd, err := b.objs.NewEventReader()
	if err != nil {
		return err
	}
	// The lost-events counter is not pinned: it counts from this Open.
	var lost uint64

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() { // owned by RunEvents: closes the reader (ending the loop below) when ctx ends
		defer wg.Done()
		defer rd.Close()
		t := time.NewTicker(lostPollInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			n, err := b.objs.EventsLost()
			if err != nil {
				log.Warn("read lost datapath events", "err", err)
				continue
			}
			if n > lost {
				sink.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, n-lost)
			}
			lost = n
		}
	}()

	for {
		ev, err := rd.Read()
		if errors.Is(err, os.ErrClosed) {
			return nil
		}
		if err != nil {
			cancel()
			return fmt.Errorf("read datapath events: %w", err)
		}
		sink.Add(EventFlow(ev))
	}
}

// EventFlow converts a datapath event to a Hubble flow: Verdict DROPPED (ERROR
// when the connection went on without its original destination), event
// type 1 (Cilium's drop notification), a drop reason, the connection's
// IPv4 and TCP ports, and Emitter weft-datapath.
func EventFlow(ev redirect.Event) *flowpb.Flow {
	verdict, dir := flowpb.Verdict_DROPPED, flowpb.TrafficDirection_EGRESS
	var reason flowpb.DropReason
	var what string
	switch ev.Kind {
	case redirect.EventRedirectRecordFailed:
		reason, what = flowpb.DropReason_FAILED_TO_INSERT_INTO_PROXYMAP, "connect refused (EPERM): original destination not recorded"
	case redirect.EventOrigDstUpdateFailed:
		verdict = flowpb.Verdict_ERROR
		reason, what = flowpb.DropReason_FAILED_TO_INSERT_INTO_PROXYMAP, "original destination not keyed for the node proxy"
	case redirect.EventInboundNoListener:
		dir = flowpb.TrafficDirection_INGRESS
		reason, what = flowpb.DropReason_SOCKET_LOOKUP_FAILED, "SYN dropped: no node-proxy inbound listener"
	case redirect.EventInboundAssignFailed:
		dir = flowpb.TrafficDirection_INGRESS
		reason, what = flowpb.DropReason_SOCKET_ASSIGN_FAILED, "SYN dropped: assignment to the node-proxy listener failed"
	default:
		reason, what = flowpb.DropReason_DROP_REASON_UNKNOWN, "datapath event "+ev.Kind.String()
	}
	summary := fmt.Sprintf("TCP %s -> %s: %s", ev.Src, ev.Dst, what)
	if ev.Errno != 0 {
		summary += fmt.Sprintf(" (%s)", ev.Errno.Error())
	}
	f := &flowpb.Flow{
		Verdict:          verdict,
		DropReason:       uint32(reason),
		DropReasonDesc:   reason,
		EventType:        &flowpb.CiliumEventType{Type: 1},
		TrafficDirection: dir,
		IsReply:          wrapperspb.Bool(false),
		IP: &flowpb.IP{
			Source:      ev.Src.Addr().String(),
			Destination: ev.Dst.Addr().String(),
			IpVersion:   flowpb.IPVersion_IPv4,
		},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort:      uint32(ev.Src.Port()),
			DestinationPort: uint32(ev.Dst.Port()),
			Flags:           &flowpb.TCPFlags{SYN: true},
		}}},
		Emitter: &flowpb.Emitter{Name: EmitterName},
		Summary: summary,
	}
	if !ev.Time.IsZero() {
		f.Time = timestamppb.New(ev.Time)
	}
	return f
}
