package stat

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Istio's metric names (ARCHITECTURE.md §7).
const (
	connsOpened   = "istio_tcp_connections_opened_total"
	connsClosed   = "istio_tcp_connections_closed_total"
	bytesSent     = "istio_tcp_sent_bytes_total"
	bytesReceived = "istio_tcp_received_bytes_total"
	requests      = "istio_requests_total"
	duration      = "istio_request_duration_milliseconds"
)

// Families are parsed Prometheus metric families by name.
type Families map[string]*dto.MetricFamily

// Parse parses the Prometheus text exposition format.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return mf, nil
}

// Scrape gets and parses url (a /metrics endpoint).
func Scrape(ctx context.Context, client *http.Client, url string) (Families, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	mf, err := Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return mf, nil
}

// Label is the value of label name on m, "" when absent.
func Label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Value is a counter's, gauge's or untyped metric's value.
func Value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// Direction is which side of its traffic a workload's row counts.
type Direction string

// Directions.
const (
	Inbound  Direction = "inbound"  // traffic the workload served (reporter="destination")
	Outbound Direction = "outbound" // traffic the workload sent (reporter="source")
)

// Key names one row: a workload and a direction.
type Key struct {
	Namespace string
	Workload  string
	Direction Direction
}

// Counters are one row's cumulative counters, summed over nodes and
// label sets.
type Counters struct {
	Opened      float64
	Closed      float64
	ClosedError float64 // closed with response_flags other than "-" (refused, reset, ...)
	BytesIn     float64 // toward the workload
	BytesOut    float64 // from the workload
	Requests    float64
	Successes   float64 // requests whose response_code is not 5xx
	// Buckets of the request duration histogram (ms): upper bound →
	// cumulative count.
	Buckets map[float64]float64
}

// Snapshot are every row's counters at one scrape of all nodes.
type Snapshot map[Key]*Counters

// Add adds one node's metrics to s.
func (s Snapshot) Add(mf Families) {
	row := func(m *dto.Metric) (*Counters, Direction) {
		var k Key
		switch Label(m, "reporter") {
		case "destination":
			k = Key{Label(m, "destination_workload_namespace"), Label(m, "destination_workload"), Inbound}
		case "source":
			k = Key{Label(m, "source_workload_namespace"), Label(m, "source_workload"), Outbound}
		default:
			return nil, ""
		}
		c := s[k]
		if c == nil {
			c = &Counters{}
			s[k] = c
		}
		return c, k.Direction
	}
	for _, m := range mf[connsOpened].GetMetric() {
		if c, _ := row(m); c != nil {
			c.Opened += Value(m)
		}
	}
	for _, m := range mf[connsClosed].GetMetric() {
		if c, _ := row(m); c != nil {
			v := Value(m)
			c.Closed += v
			if f := Label(m, "response_flags"); f != "-" && f != "" {
				c.ClosedError += v
			}
		}
	}
	// Istio's byte directions are the same for both reporters:
	// received = client to server ("during request"), sent = server to
	// client ("during response").
	for _, m := range mf[bytesReceived].GetMetric() {
		if c, dir := row(m); c != nil {
			if dir == Inbound {
				c.BytesIn += Value(m)
			} else {
				c.BytesOut += Value(m)
			}
		}
	}
	for _, m := range mf[bytesSent].GetMetric() {
		if c, dir := row(m); c != nil {
			if dir == Inbound {
				c.BytesOut += Value(m)
			} else {
				c.BytesIn += Value(m)
			}
		}
	}
	for _, m := range mf[requests].GetMetric() {
		if c, _ := row(m); c != nil {
			v := Value(m)
			c.Requests += v
			if !strings.HasPrefix(Label(m, "response_code"), "5") {
				c.Successes += v
			}
		}
	}
	for _, m := range mf[duration].GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		if c, _ := row(m); c != nil {
			if c.Buckets == nil {
				c.Buckets = map[float64]float64{}
			}
			inf := false
			for _, b := range h.GetBucket() {
				c.Buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				inf = inf || math.IsInf(b.GetUpperBound(), 1)
			}
			if !inf {
				c.Buckets[math.Inf(1)] += float64(h.GetSampleCount())
			}
		}
	}
}

// Row is one workload's golden signals over a window.
type Row struct {
	Key
	ConnsPerSec    float64
	Active         float64 // opened - closed, at the second scrape
	BytesInPerSec  float64 // toward the workload
	BytesOutPerSec float64 // from the workload
	// FailedShare is the share of connections closed in the window that
	// were refused or reset (response_flags other than "-"); NaN when none
	// closed.
	FailedShare float64
	// HTTP: only when a waypoint reported requests.
	HTTP *HTTPStats
}

// HTTPStats are a row's request signals.
type HTTPStats struct {
	RPS           float64
	Success       float64 // share of non-5xx responses; NaN without requests
	P50, P95, P99 float64 // ms; NaN without observations
}

// Compute turns two snapshots taken seconds apart into rows, sorted by
// namespace, workload and direction. A counter that went down (its node
// proxy restarted) counts from zero.
func Compute(before, after Snapshot, seconds float64) []Row {
	var rows []Row
	for k, a := range after {
		b := before[k]
		if b == nil {
			b = &Counters{}
		}
		d := func(after, before float64) float64 {
			if after < before {
				return after
			}
			return after - before
		}
		closed, failed := d(a.Closed, b.Closed), d(a.ClosedError, b.ClosedError)
		r := Row{
			Key:            k,
			ConnsPerSec:    d(a.Opened, b.Opened) / seconds,
			Active:         math.Max(0, a.Opened-a.Closed),
			BytesInPerSec:  d(a.BytesIn, b.BytesIn) / seconds,
			BytesOutPerSec: d(a.BytesOut, b.BytesOut) / seconds,
			FailedShare:    math.NaN(),
		}
		if closed > 0 {
			r.FailedShare = math.Min(1, failed/closed)
		}
		if a.Requests > 0 || a.Buckets != nil {
			reqs := d(a.Requests, b.Requests)
			h := &HTTPStats{RPS: reqs / seconds, Success: math.NaN()}
			if reqs > 0 {
				h.Success = d(a.Successes, b.Successes) / reqs
			}
			window := map[float64]float64{}
			for le, n := range a.Buckets {
				window[le] = d(n, b.Buckets[le])
			}
			h.P50, h.P95, h.P99 = Quantile(0.5, window), Quantile(0.95, window), Quantile(0.99, window)
			r.HTTP = h
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(x, y Row) int {
		return strings.Compare(x.Namespace+"\x00"+x.Workload+"\x00"+string(x.Direction), y.Namespace+"\x00"+y.Workload+"\x00"+string(y.Direction))
	})
	return rows
}

// Quantile estimates the q-quantile of a histogram (upper bound →
// cumulative count) as Prometheus's histogram_quantile does: linear
// interpolation within the bucket, the highest finite bound when it falls
// in the +Inf bucket. NaN without observations.
func Quantile(q float64, buckets map[float64]float64) float64 {
	bounds := make([]float64, 0, len(buckets))
	for le := range buckets {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 || !math.IsInf(bounds[len(bounds)-1], 1) {
		return math.NaN()
	}
	total := buckets[bounds[len(bounds)-1]]
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for i, le := range bounds {
		c := buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				if i == 0 {
					return math.NaN()
				}
				return bounds[i-1]
			}
			if c == prevCount {
				return le
			}
			return prevBound + (le-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = le, c
	}
	return bounds[len(bounds)-1]
}

// formatRate prints a per-second value compactly ("12.3", "1.2k").
func formatRate(v float64) string {
	switch {
	case v >= 1e9:
		return strconv.FormatFloat(v/1e9, 'f', 1, 64) + "G"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
