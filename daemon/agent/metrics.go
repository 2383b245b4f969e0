package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

type metrics struct {
	enrolled      prometheus.Gauge
	enrolls       *prometheus.CounterVec
	releases      prometheus.Counter
	enrollSeconds prometheus.Histogram
	portConflicts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		enrolled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_agent_enrolled_pods", Help: "Pods of this node currently in the mesh.",
		}),
		enrolls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_agent_enrollments_total", Help: "Pod enrollments, by result.",
		}, []string{"result"}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_agent_releases_total", Help: "Pods released from the mesh (unenrolled or deleted).",
		}),
		enrollSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_agent_enroll_duration_seconds", Help: "Time to enroll one pod (netns handoff acknowledged and redirection on).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		portConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_agent_port_conflict_pods_total", Help: "Pods not enrolled because they listen on a node proxy port (15001/15006/15008).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.enrolled, m.enrolls, m.releases, m.enrollSeconds, m.portConflicts)
	}
	return m
}

func eventScheme() *runtime.Scheme { return scheme.Scheme }
