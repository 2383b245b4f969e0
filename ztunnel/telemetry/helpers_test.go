package telemetry

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/state"
)

// Fixtures: a fully described client, a server with no telemetry metadata
// (every fallback applies) and the Service in front of it.
var (
	webPod = &state.Workload{
		Namespace: "shop", Name: "web-7d9f8-abcde", ServiceAccount: "web",
		IPs:          []netip.Addr{netip.MustParseAddr("10.1.0.5")},
		WorkloadName: "web", CanonicalService: "web-frontend", CanonicalRevision: "v2",
		App: "web", Version: "v2.1", Cluster: "east",
	}
	echoPod = &state.Workload{Namespace: "shop", Name: "echo-5c4d-xyz12", ServiceAccount: "echo"}
	echoSvc = &state.Service{Namespace: "shop", Name: "echo", Hostname: "echo.shop.svc.cluster.local"}
	webID   = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"}
	echoID  = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "echo"}
)

// outboundMTLS is web → echo's Service over HBONE, as web's node reports it.
func outboundMTLS() ConnInfo {
	return ConnInfo{
		Reporter: ReporterSource,
		// The app's redirected connection reaches the outbound listener from
		// loopback inside the pod's netns.
		Source:      Peer{Workload: webPod, Identity: webID, Addr: netip.MustParseAddrPort("127.0.0.1:40312")},
		Destination: Peer{Workload: echoPod, Identity: echoID, Addr: netip.MustParseAddrPort("10.1.1.7:15008")},
		Service:     echoSvc,
		MutualTLS:   true,
		HBONEAddr:   netip.MustParseAddrPort("10.1.1.7:8080"),
	}
}

// inboundPlaintext is an unknown plaintext client → echo, as echo's node
// reports it.
func inboundPlaintext() ConnInfo {
	return ConnInfo{
		Reporter:    ReporterDestination,
		Source:      Peer{Addr: netip.MustParseAddrPort("192.168.9.9:51000")},
		Destination: Peer{Workload: echoPod, Identity: echoID, Addr: netip.MustParseAddrPort("10.1.1.7:8080")},
	}
}

// testMetrics is a Metrics on its own registry, logging JSON into a buffer,
// with a clock the test moves.
type testMetrics struct {
	*Metrics
	reg   *prometheus.Registry
	logs  *syncBuffer
	clock *fakeClock
}

func newTestMetrics(tb testing.TB) *testMetrics {
	tb.Helper()
	reg := prometheus.NewPedanticRegistry()
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := New(reg, log)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m.now = clock.Now
	return &testMetrics{Metrics: m, reg: reg, logs: logs, clock: clock}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log lines written so far, without "time".
func (b *syncBuffer) lines(tb testing.TB) []map[string]any {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			tb.Fatalf("log line %q is not JSON: %v", line, err)
		}
		delete(rec, "time")
		out = append(out, rec)
	}
	return out
}

// sample is one gathered series.
type sample struct {
	labels map[string]string
	value  float64
}

// gathered gathers g and returns the series of the metric name.
func gathered(tb testing.TB, g prometheus.Gatherer, name string) []sample {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("Gather: %v", err)
	}
	var out []sample
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			s := sample{labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.Counter.GetValue()
			case m.Gauge != nil:
				s.value = m.Gauge.GetValue()
			}
			out = append(out, s)
		}
	}
	return out
}

// value returns the sum of the series of name whose labels include match.
func value(tb testing.TB, g prometheus.Gatherer, name string, match map[string]string) float64 {
	tb.Helper()
	var sum float64
	for _, s := range gathered(tb, g, name) {
		if includes(s.labels, match) {
			sum += s.value
		}
	}
	return sum
}

func includes(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// istioDefaults is the label set of a connection nothing is known about,
// with overrides applied: Istio reports what it cannot fill as "unknown".
func istioDefaults(overrides map[string]string) map[string]string {
	want := map[string]string{}
	for _, name := range istioLabels {
		want[name] = unknown
	}
	want["request_protocol"] = "tcp"
	want["response_flags"] = "-"
	maps.Copy(want, overrides)
	return want
}

// diffLabels lists the labels where got and want differ.
func diffLabels(got, want map[string]string) []string {
	var diffs []string
	union := maps.Clone(got)
	maps.Copy(union, want)
	keys := slices.Sorted(maps.Keys(union))
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		if g != w || gok != wok {
			diffs = append(diffs, k+": got "+quoteOr(g, gok)+", want "+quoteOr(w, wok))
		}
	}
	return diffs
}

func quoteOr(v string, ok bool) string {
	if !ok {
		return "(absent)"
	}
	return `"` + v + `"`
}
