package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// startAdmin serves g on a loopback port and returns the base URL and a
// stop function that ends the server and returns ServeAdmin's result.
func startAdmin(tb testing.TB, g prometheus.Gatherer, ready func() error) (string, func() error) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeAdmin(ctx, ln, g, ready, slog.New(slog.DiscardHandler)) }()
	var stopped atomic.Bool
	var result error
	stop := func() error {
		if stopped.Swap(true) {
			return result
		}
		cancel()
		select {
		case result = <-done:
		case <-time.After(10 * time.Second):
			tb.Fatalf("ServeAdmin did not return 10s after its context ended")
		}
		return result
	}
	tb.Cleanup(func() { stop() })
	return "http://" + ln.Addr().String(), stop
}

// client talks to loopback only and never through a proxy.
var client = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := client.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

func TestAdminMetrics(t *testing.T) {
	m := newTestMetrics(t)
	c := m.Open(outboundMTLS())
	c.Sent(42)
	base, _ := startAdmin(t, m.reg, nil)

	for _, path := range []string{"/metrics", "/stats/prometheus"} {
		t.Run(path, func(t *testing.T) {
			code, body := get(t, base+path)
			if code != http.StatusOK {
				t.Fatalf("GET %s = %d, want 200", path, code)
			}
			line := findLine(body, "istio_tcp_connections_opened_total{")
			if line == "" {
				t.Fatalf("GET %s: no istio_tcp_connections_opened_total series in:\n%s", path, body)
			}
			var got []string
			for _, match := range labelName.FindAllStringSubmatch(line, -1) {
				got = append(got, match[1])
			}
			want := slices.Sorted(slices.Values(istioLabels[:]))
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("labels = %v\nwant %v (all %d of Istio's)", got, want, len(want))
			}
			if !strings.HasSuffix(line, " 1") {
				t.Errorf("opened series %q, want value 1", line)
			}
			// An open connection's bytes are in the scrape.
			if sent := findLine(body, "istio_tcp_sent_bytes_total{"); !strings.HasSuffix(sent, " 42") {
				t.Errorf("sent bytes series %q, want value 42", sent)
			}
		})
	}
}

func TestAdminReady(t *testing.T) {
	var notReady atomic.Pointer[error]
	waiting := errors.New("waiting for workload certificates")
	notReady.Store(&waiting)
	ready := func() error {
		if err := notReady.Load(); err != nil {
			return *err
		}
		return nil
	}
	base, _ := startAdmin(t, prometheus.NewRegistry(), ready)

	code, body := get(t, base+"/healthz/ready")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "waiting for workload certificates") {
		t.Errorf("not ready: GET /healthz/ready = %d %q, want 503 with the reason", code, body)
	}
	notReady.Store(nil)
	if code, body := get(t, base+"/healthz/ready"); code != http.StatusOK {
		t.Errorf("ready: GET /healthz/ready = %d %q, want 200", code, body)
	}
	if code, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", code)
	}
}

func TestAdminNilReadyIsReady(t *testing.T) {
	base, _ := startAdmin(t, prometheus.NewRegistry(), nil)
	if code, body := get(t, base+"/healthz/ready"); code != http.StatusOK {
		t.Errorf("GET /healthz/ready = %d %q, want 200", code, body)
	}
}

func TestAdminShutdown(t *testing.T) {
	base, stop := startAdmin(t, prometheus.NewRegistry(), nil)
	if code, _ := get(t, base+"/metrics"); code != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200", code)
	}
	if err := stop(); err != nil {
		t.Errorf("ServeAdmin after cancel = %v, want nil", err)
	}
	if resp, err := client.Get(base + "/metrics"); err == nil {
		resp.Body.Close()
		t.Errorf("GET after shutdown succeeded (%s), want the port closed", resp.Status)
	}
}

func TestAdminServeError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ln.Close()
	err = ServeAdmin(t.Context(), ln, prometheus.NewRegistry(), nil, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "serve admin on ") {
		t.Errorf("ServeAdmin on a closed listener = %v, want a serve admin error", err)
	}
}

func findLine(text, prefix string) string {
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}
