package meshstream

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// serverMetrics are the Server's Prometheus metrics. Without a registerer
// they are still counted, just not exported.
type serverMetrics struct {
	streams       prometheus.Gauge
	nodes         prometheus.Gauge
	pushes        prometheus.Counter
	resourcesSent prometheus.Counter
	removalsSent  prometheus.Counter
	acks          prometheus.Counter
	nacks         prometheus.Counter
	refused       *prometheus.CounterVec
	ackLatency    prometheus.Histogram
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_meshstream_connected_streams",
			Help: "Config streams currently connected (a node's agent and ztunnel hold one each).",
		}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_meshstream_connected_nodes",
			Help: "Nodes with at least one connected config stream.",
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_meshstream_pushes_total",
			Help: "Delta responses sent to nodes.",
		}),
		resourcesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_meshstream_resources_sent_total",
			Help: "Added or changed resources sent to nodes.",
		}),
		removalsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_meshstream_removals_sent_total",
			Help: "Resource removals sent to nodes.",
		}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_meshstream_acks_total",
			Help: "Delta responses a node applied and acknowledged.",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_meshstream_nacks_total",
			Help: "Delta responses a node refused (NACK); its state stayed as before.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_meshstream_refused_streams_total",
			Help: "Streams refused or ended by the server, by reason.",
		}, []string{"reason"}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_meshstream_ack_latency_seconds",
			Help:    "Time from sending a delta response to its ACK or NACK.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	for _, r := range []string{reasonUnauthenticated, reasonWrongNode, reasonProtocol} {
		m.refused.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.streams, m.nodes, m.pushes, m.resourcesSent, m.removalsSent, m.acks, m.nacks, m.refused, m.ackLatency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register meshstream metrics: %w", err)
		}
	}
	return m, nil
}

// Reasons of weft_meshstream_refused_streams_total.
const (
	reasonUnauthenticated = "unauthenticated"
	reasonWrongNode       = "wrong_node"
	reasonProtocol        = "protocol_violation"
)
