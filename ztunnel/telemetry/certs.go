package telemetry

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// CertExpiry is when one held workload certificate expires.
type CertExpiry struct {
	// Identity is the certificate's SPIFFE ID.
	Identity string
	// NotAfter is zero while no certificate was issued yet.
	NotAfter time.Time
}

// RegisterCertExpiry registers weft_ztunnel_cert_expiry_timestamp_seconds on
// reg: per identity the proxy holds a certificate for, when that
// certificate expires (Unix seconds), read from certs at every scrape so it
// follows renewals. The earliest value is what `weft status` reports.
func RegisterCertExpiry(reg prometheus.Registerer, certs func() []CertExpiry) error {
	c := certCollector{
		certs: certs,
		desc: prometheus.NewDesc("weft_ztunnel_cert_expiry_timestamp_seconds",
			"When the workload certificate of each identity this node proxy holds expires, in seconds since the epoch.",
			[]string{"identity"}, nil),
	}
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("register certificate expiry metric: %w", err)
	}
	return nil
}

type certCollector struct {
	certs func() []CertExpiry
	desc  *prometheus.Desc
}

func (c certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	seen := make(map[string]bool)
	for _, e := range c.certs() {
		if e.NotAfter.IsZero() || seen[e.Identity] || !utf8.ValidString(e.Identity) {
			continue
		}
		seen[e.Identity] = true
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(e.NotAfter.Unix()), e.Identity)
	}
}
