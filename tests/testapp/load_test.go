package testapp

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var d []time.Duration
		for _, n := range ns {
			d = append(d, time.Duration(n)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{name: "empty", p: 50, want: 0},
		{name: "one", sorted: ms(7), p: 99, want: 7 * time.Millisecond},
		{name: "p50 of 4", sorted: ms(1, 2, 3, 4), p: 50, want: 2 * time.Millisecond},
		{name: "p100 of 4", sorted: ms(1, 2, 3, 4), p: 100, want: 4 * time.Millisecond},
		{name: "p90 of 100", sorted: ms(hundred...), p: 90, want: 90 * time.Millisecond},
		{name: "p99 of 100", sorted: ms(hundred...), p: 99, want: 99 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	srv, _ := startEcho(t, EchoConfig{Pod: testPod})
	base := "http://" + srv.Addr().String()
	const qps, duration, conns = 200, 250 * time.Millisecond, 2
	// The schedule allows at most this many requests.
	maxRequests := int(math.Ceil(qps*duration.Seconds())) + conns

	tests := []struct {
		name       string
		cfg        LoadConfig
		wantErrors bool
		wantCode   int
	}{
		{name: "get", cfg: LoadConfig{URL: base + "/"}, wantCode: 200},
		{name: "post payload h2c", cfg: LoadConfig{URL: base + "/", PayloadSize: 512, HTTPOptions: HTTPOptions{H2C: true}}, wantCode: 200},
		{name: "errors", cfg: LoadConfig{URL: base + "/status/500"}, wantErrors: true, wantCode: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.QPS, tt.cfg.Duration, tt.cfg.Connections = qps, duration, conns
			got, err := Load(t.Context(), tt.cfg)
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if got.Requests < 1 || got.Requests > maxRequests {
				t.Errorf("Load() requests = %d, want 1..%d", got.Requests, maxRequests)
			}
			wantErrs := 0
			if tt.wantErrors {
				wantErrs = got.Requests
			}
			if got.Errors != wantErrs {
				t.Errorf("Load() errors = %d (%q), want %d", got.Errors, got.ErrorSamples, wantErrs)
			}
			if got.StatusCodes[tt.wantCode] != got.Requests {
				t.Errorf("Load() statusCodes = %v, want all %d", got.StatusCodes, tt.wantCode)
			}
			if !(0 < got.P50Millis && got.P50Millis <= got.P90Millis && got.P90Millis <= got.P99Millis && got.P99Millis <= got.MaxMillis) {
				t.Errorf("Load() percentiles p50 %v, p90 %v, p99 %v, max %v: want 0 < p50 <= p90 <= p99 <= max",
					got.P50Millis, got.P90Millis, got.P99Millis, got.MaxMillis)
			}
			if got.ActualQPS <= 0 || got.ActualQPS > float64(maxRequests)/duration.Seconds() {
				t.Errorf("Load() actualQPS = %v, want in (0, %v]", got.ActualQPS, float64(maxRequests)/duration.Seconds())
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  LoadConfig
	}{
		{name: "no duration", cfg: LoadConfig{URL: "http://127.0.0.1:1/"}},
		{name: "bad url", cfg: LoadConfig{URL: "ftp://x/", Duration: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Load(t.Context(), tt.cfg); err == nil {
				t.Errorf("Load(%+v) error = nil, want one", tt.cfg)
			}
		})
	}
}
