package controller

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's Prometheus metrics. Without a registerer
// they are still counted, just not exported.
type metrics struct {
	compileSeconds prometheus.Histogram
	recompiles     prometheus.Counter
	resources      prometheus.Gauge
	nodes          prometheus.Gauge
	statusWrites   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		compileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_operator_compile_duration_seconds",
			Help:    "Time to compile the cluster's state into the mesh's resource set.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		recompiles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_operator_recompiles_total",
			Help: "Compiles of the mesh's resource set (a burst of changes is compiled once).",
		}),
		resources: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_operator_resources",
			Help: "Resources in the last compiled set (workloads, services, policies, settings).",
		}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_operator_nodes",
			Help: "Nodes of the cluster the compiled set is handed to.",
		}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_operator_status_writes_total",
			Help: "TrafficTarget status writes, by result: ok, conflict (retried), gone (deleted meanwhile), error (retried).",
		}, []string{"result"}),
	}
	for _, r := range []string{writeOK, writeConflict, writeGone, writeError} {
		m.statusWrites.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.compileSeconds, m.recompiles, m.resources, m.nodes, m.statusWrites} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register controller metrics: %w", err)
		}
	}
	return m, nil
}
