package flows

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the flow server's Prometheus metrics.
type metrics struct {
	seen      prometheus.Counter
	lost      *prometheus.CounterVec
	followers prometheus.Gauge
	exporters prometheus.Gauge
	ringSize  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, ringSize int) (*metrics, error) {
	m := &metrics{
		seen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_agent_flows_seen_total",
			Help: "Flow records stored in the agent's flow ring.",
		}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_agent_flows_lost_total",
			Help: "Flow records lost, by where: observer_events_queue (a producer's queue was full or the agent unreachable), " +
				"perf_event_ring_buffer (the datapath's ring), hubble_ring_buffer (a reader fell a whole ring behind; counted per reader).",
		}, []string{"reason"}),
		followers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_agent_flows_followers",
			Help: "GetFlows streams now following the flow ring.",
		}),
		exporters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_agent_flows_exporters",
			Help: "Flow producers (FlowExport streams) now connected.",
		}),
		ringSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_agent_flows_ring_size",
			Help: "Capacity of the agent's flow ring, in records.",
		}),
	}
	m.ringSize.Set(float64(ringSize))
	for _, s := range []flowpb.LostEventSource{
		flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE,
		flowpb.LostEventSource_PERF_EVENT_RING_BUFFER,
		flowpb.LostEventSource_HUBBLE_RING_BUFFER,
	} {
		m.lost.WithLabelValues(lostReason(s)) // export zeros
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.seen, m.lost, m.followers, m.exporters, m.ringSize} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// lostReason is the reason label of losses at source s.
func lostReason(s flowpb.LostEventSource) string {
	return strings.ToLower(s.String())
}
