package telemetry

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestAccessLog(t *testing.T) {
	tests := map[string]struct {
		info  ConnInfo
		recv  int // client → server
		sent  int // server → client
		lasts time.Duration
		flags ResponseFlags
		err   error
		want  map[string]any
	}{
		"outbound mTLS": {
			info:  outboundMTLS(),
			recv:  300,
			sent:  4000,
			lasts: 1500*time.Millisecond + 250*time.Microsecond,
			want: map[string]any{
				"level":          "INFO",
				"msg":            "connection complete",
				"src.addr":       "10.1.0.5:40312",
				"src.workload":   "web-7d9f8-abcde",
				"src.namespace":  "shop",
				"src.identity":   "spiffe://cluster.local/ns/shop/sa/web",
				"dst.addr":       "10.1.1.7:15008",
				"dst.hbone_addr": "10.1.1.7:8080",
				"dst.service":    "echo.shop.svc.cluster.local",
				"dst.workload":   "echo-5c4d-xyz12",
				"dst.namespace":  "shop",
				"dst.identity":   "spiffe://cluster.local/ns/shop/sa/echo",
				"direction":      "outbound",
				// The local workload (the client) sent the request bytes.
				"bytes_sent": 300.0,
				"bytes_recv": 4000.0,
				"duration":   1500.25,
			},
		},
		"inbound plaintext reset": {
			info:  inboundPlaintext(),
			recv:  10,
			sent:  20,
			lasts: 3 * time.Millisecond,
			err:   fmt.Errorf("copy to client: %w", syscall.ECONNRESET),
			want: map[string]any{
				"level":        "WARN",
				"msg":          "connection complete",
				"src.addr":     "192.168.9.9:51000",
				"dst.addr":     "10.1.1.7:8080",
				"dst.workload": "echo-5c4d-xyz12",
				// No identity is logged without mTLS.
				"dst.namespace": "shop",
				"direction":     "inbound",
				// The local workload (the server) sent the response bytes.
				"bytes_sent": 20.0,
				"bytes_recv": 10.0,
				"duration":   3.0,
				"error":      "copy to client: connection reset by peer",
			},
		},
		"upstream connect failure": {
			info:  outboundMTLS(),
			flags: FlagConnectFailure,
			err:   syscall.ECONNREFUSED,
			want: map[string]any{
				"level":          "WARN",
				"msg":            "connection complete",
				"src.addr":       "10.1.0.5:40312",
				"src.workload":   "web-7d9f8-abcde",
				"src.namespace":  "shop",
				"src.identity":   "spiffe://cluster.local/ns/shop/sa/web",
				"dst.addr":       "10.1.1.7:15008",
				"dst.hbone_addr": "10.1.1.7:8080",
				"dst.service":    "echo.shop.svc.cluster.local",
				"dst.workload":   "echo-5c4d-xyz12",
				"dst.namespace":  "shop",
				"dst.identity":   "spiffe://cluster.local/ns/shop/sa/echo",
				"direction":      "outbound",
				"bytes_sent":     0.0,
				"bytes_recv":     0.0,
				"duration":       0.0,
				"response_flags": "CONNECT",
				"error":          "connection refused",
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m := newTestMetrics(t)
			c := m.Open(tt.info)
			c.Received(tt.recv)
			c.Sent(tt.sent)
			m.clock.Advance(tt.lasts)
			c.Close(tt.flags, tt.err)

			lines := m.logs.lines(t)
			if len(lines) != 1 {
				t.Fatalf("%d log lines, want 1: %v", len(lines), lines)
			}
			checkRecord(t, lines[0], tt.want)
		})
	}
}

func TestAccessLogDenied(t *testing.T) {
	m := newTestMetrics(t)
	info := inboundPlaintext()
	m.Denied(info, "shop/allow-web", "source not allowed")
	lines := m.logs.lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1: %v", len(lines), lines)
	}
	checkRecord(t, lines[0], map[string]any{
		"level":          "WARN",
		"msg":            "connection denied",
		"src.addr":       "192.168.9.9:51000",
		"dst.addr":       "10.1.1.7:8080",
		"dst.workload":   "echo-5c4d-xyz12",
		"dst.namespace":  "shop",
		"direction":      "inbound",
		"bytes_sent":     0.0,
		"bytes_recv":     0.0,
		"response_flags": "DENY",
		"policy":         "shop/allow-web",
		"reason":         "source not allowed",
	})
}

func TestAccessLogFailed(t *testing.T) {
	m := newTestMetrics(t)
	info := outboundMTLS()
	m.Failed(info, fmt.Errorf("hbone connect: %w", syscall.ECONNREFUSED))
	lines := m.logs.lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1: %v", len(lines), lines)
	}
	checkRecord(t, lines[0], map[string]any{
		"level":          "WARN",
		"msg":            "connection failed",
		"src.addr":       "10.1.0.5:40312",
		"dst.addr":       "10.1.1.7:15008",
		"dst.hbone_addr": "10.1.1.7:8080",
		"direction":      "outbound",
		"error":          "hbone connect: connection refused",
	})
}

// TestAccessLogLevel: with the access log turned down to warnings, clean
// connections write nothing while the metrics still count them.
func TestAccessLogLevel(t *testing.T) {
	m := newTestMetrics(t)
	var buf syncBuffer
	m.log = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m.Open(outboundMTLS()).Close(FlagNone, nil)
	m.Open(outboundMTLS()).Close(FlagNone, syscall.ECONNRESET)
	lines := buf.lines(t)
	if len(lines) != 1 || lines[0]["level"] != "WARN" {
		t.Errorf("log lines = %v, want only the WARN line of the failed connection", lines)
	}
	if got := value(t, m.reg, closed, nil); got != 2 {
		t.Errorf("%s = %v, want 2", closed, got)
	}
}

func checkRecord(t *testing.T, got, want map[string]any) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			t.Errorf("%s = %v (%T), want %v (%T)", k, g, g, want[k], want[k])
		}
	}
	var extra []string
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, fmt.Sprintf("%s=%v", k, got[k]))
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		t.Errorf("unexpected fields: %s", strings.Join(extra, " "))
	}
}
