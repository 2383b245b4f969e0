package telemetry

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
)

func benchMetrics(b *testing.B, log *slog.Logger) *Metrics {
	b.Helper()
	m, err := New(prometheus.NewRegistry(), log)
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	return m
}

// BenchmarkConnection is one connection's whole telemetry: Open, ten
// writes, Close with its access-log line.
func BenchmarkConnection(b *testing.B) {
	logs := map[string]*slog.Logger{
		"log=json": slog.New(slog.NewJSONHandler(io.Discard, nil)),
		"log=off":  slog.New(slog.DiscardHandler),
	}
	for _, name := range []string{"log=json", "log=off", "log=off,flows"} {
		b.Run(name, func(b *testing.B) {
			m := benchMetrics(b, logs[strings.TrimSuffix(name, ",flows")])
			if strings.HasSuffix(name, ",flows") {
				m.SetFlowSink(discardSink{})
			}
			info := outboundMTLS()
			b.ReportAllocs()
			for b.Loop() {
				c := m.Open(info)
				for range 10 {
					c.Sent(16 << 10)
				}
				c.Close(FlagNone, nil)
			}
		})
	}
}

type discardSink struct{}

func (discardSink) Record(*flow.Flow) {}

// BenchmarkSent is the copy loops' hot path.
func BenchmarkSent(b *testing.B) {
	m := benchMetrics(b, nil)
	c := m.Open(outboundMTLS())
	b.ReportAllocs()
	for b.Loop() {
		c.Sent(16 << 10)
	}
	c.Close(FlagNone, nil)
}

// BenchmarkSentParallel: one connection written from every CPU at once
// (the worst case; a real connection has at most two copy loops).
func BenchmarkSentParallel(b *testing.B) {
	m := benchMetrics(b, nil)
	c := m.Open(outboundMTLS())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Sent(16 << 10)
		}
	})
	c.Close(FlagNone, nil)
}

// BenchmarkScrape10k: a gather of the registry with 10,000 open
// connections that all moved bytes since the last one.
func BenchmarkScrape10k(b *testing.B) {
	reg := prometheus.NewRegistry()
	m, err := New(reg, nil)
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	conns := make([]*Conn, 10000)
	for i := range conns {
		conns[i] = m.Open(outboundMTLS())
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range conns {
			c.Sent(1)
		}
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range conns {
		c.Close(FlagNone, nil)
	}
}
