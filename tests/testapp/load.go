package testapp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
)

// LoadConfig configures Load.
type LoadConfig struct {
	URL string
	// QPS is the total request rate, spread evenly over the connections;
	// zero or less sends as fast as the connections allow.
	QPS float64
	// Duration is how long requests are started for; in-flight requests
	// then finish within HTTPOptions.Timeout. It must be positive.
	Duration time.Duration
	// Connections is the number of connections, each carrying one request
	// at a time; zero means 1.
	Connections int
	// PayloadSize, when positive, POSTs that many bytes with each request
	// instead of a GET.
	PayloadSize int
	HTTPOptions
}

// LoadResult is what Load prints. Latencies cover the requests that got an
// answer, whatever its status.
type LoadResult struct {
	Requests     int         `json:"requests"`
	Errors       int         `json:"errors"` // unanswered or non-2xx
	P50Millis    float64     `json:"p50Millis"`
	P90Millis    float64     `json:"p90Millis"`
	P99Millis    float64     `json:"p99Millis"`
	MaxMillis    float64     `json:"maxMillis"`
	ActualQPS    float64     `json:"actualQPS"`
	StatusCodes  map[int]int `json:"statusCodes"`
	ErrorSamples []string    `json:"errorSamples,omitempty"` // up to 5 distinct
}

// Load sends requests to cfg.URL at a fixed rate for cfg.Duration and
// reports counts and latency percentiles. Request failures are counted in
// the result, not returned; the error reports only an unusable
// configuration. A cancelled ctx ends the run early.
func Load(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	if err := cfg.checkURL(cfg.URL); err != nil {
		return LoadResult{}, err
	}
	if cfg.Duration <= 0 {
		return LoadResult{}, fmt.Errorf("check load duration %v: must be positive", cfg.Duration)
	}
	conns := max(cfg.Connections, 1)
	var interval time.Duration // between one connection's requests
	if cfg.QPS > 0 {
		interval = time.Duration(float64(time.Second) * float64(conns) / cfg.QPS)
	}

	start := time.Now()
	deadline := start.Add(cfg.Duration)
	workers := make([]loadWorker, conns)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.cfg = &cfg
		w.transport = cfg.newTransport()
		w.transport.MaxConnsPerHost = 1
		w.transport.MaxIdleConnsPerHost = 1
		// Stagger the connections so that requests are spread evenly.
		first := start.Add(interval * time.Duration(i) / time.Duration(conns))
		wg.Go(func() { w.run(ctx, first, interval, deadline) })
	}
	wg.Wait()
	elapsed := min(time.Since(start), cfg.Duration)

	res := LoadResult{StatusCodes: map[int]int{}}
	var lat []time.Duration
	for _, w := range workers {
		w.transport.CloseIdleConnections()
		res.Requests += w.requests
		res.Errors += w.failures
		lat = append(lat, w.latencies...)
		for code, n := range w.statusCodes {
			res.StatusCodes[code] += n
		}
		for _, e := range w.errorSamples {
			if len(res.ErrorSamples) < maxErrorSamples && !slices.Contains(res.ErrorSamples, e) {
				res.ErrorSamples = append(res.ErrorSamples, e)
			}
		}
	}
	slices.Sort(lat)
	res.P50Millis = millis(percentile(lat, 50))
	res.P90Millis = millis(percentile(lat, 90))
	res.P99Millis = millis(percentile(lat, 99))
	res.MaxMillis = millis(percentile(lat, 100))
	if elapsed > 0 {
		res.ActualQPS = math.Round(float64(res.Requests)/elapsed.Seconds()*100) / 100
	}
	return res, nil
}

const maxErrorSamples = 5

// loadWorker drives one connection. Its fields are written only by run.
type loadWorker struct {
	cfg *LoadConfig

	transport          *http.Transport
	requests, failures int
	latencies          []time.Duration
	statusCodes        map[int]int
	errorSamples       []string
}

// run starts a request at first and then every interval (back to back when
// interval is zero, or when behind schedule) until deadline or ctx is done.
func (w *loadWorker) run(ctx context.Context, first time.Time, interval time.Duration, deadline time.Time) {
	w.statusCodes = map[int]int{}
	var payload []byte
	if w.cfg.PayloadSize > 0 {
		payload = bytes.Repeat([]byte{'x'}, w.cfg.PayloadSize)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := first
	for {
		now := time.Now()
		if !now.Before(deadline) || ctx.Err() != nil {
			return
		}
		if interval > 0 {
			if !next.Before(deadline) {
				return
			}
			if wait := next.Sub(now); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return
				}
			}
			next = next.Add(interval)
		}
		w.once(ctx, payload)
	}
}

func (w *loadWorker) once(ctx context.Context, payload []byte) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.timeout())
	defer cancel()
	w.requests++
	method, body := http.MethodGet, io.Reader(nil)
	if payload != nil {
		method, body = http.MethodPost, bytes.NewReader(payload)
	}
	req, err := w.cfg.newRequest(ctx, method, w.cfg.URL, body)
	if err != nil {
		w.fail(err)
		return
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	start := time.Now()
	resp, err := w.transport.RoundTrip(req)
	if err != nil {
		w.fail(err)
		return
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		w.fail(fmt.Errorf("%s %s: read body: %w", method, w.cfg.URL, err))
		return
	}
	w.latencies = append(w.latencies, time.Since(start))
	w.statusCodes[resp.StatusCode]++
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		w.fail(fmt.Errorf("%s %s: status %d", method, w.cfg.URL, resp.StatusCode))
	}
}

func (w *loadWorker) fail(err error) {
	w.failures++
	if msg := err.Error(); len(w.errorSamples) < maxErrorSamples && !slices.Contains(w.errorSamples, msg) {
		w.errorSamples = append(w.errorSamples, msg)
	}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or 0 when it is empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// millis converts d to milliseconds, rounded to the microsecond.
func millis(d time.Duration) float64 {
	return math.Round(float64(d.Microseconds())) / 1000
}
