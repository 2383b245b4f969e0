package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/state"
)

const (
	opened   = "istio_tcp_connections_opened_total"
	closed   = "istio_tcp_connections_closed_total"
	sentB    = "istio_tcp_sent_bytes_total"
	received = "istio_tcp_received_bytes_total"
)

func TestLabels(t *testing.T) {
	mapped := inboundPlaintext()
	mapped.Reporter = ReporterSource
	mapped.MutualTLS = true
	mapped.Source = Peer{Workload: webPod, Identity: webID}
	mapped.HBONEAddr = netip.MustParseAddrPort("[::ffff:10.1.1.7]:8080")
	mapped.Destination.Addr = netip.MustParseAddrPort("[::ffff:10.1.1.7]:15008")

	appOnly := &state.Workload{Namespace: "shop", Name: "echo-5c4d-xyz12", App: "echo", Version: "v1", Cluster: "west"}

	tests := map[string]struct {
		info ConnInfo
		want map[string]string
	}{
		"outbound mTLS to a service": {
			info: outboundMTLS(),
			want: istioDefaults(map[string]string{
				"reporter":                       "source",
				"source_workload":                "web",
				"source_canonical_service":       "web-frontend",
				"source_canonical_revision":      "v2",
				"source_workload_namespace":      "shop",
				"source_principal":               "spiffe://cluster.local/ns/shop/sa/web",
				"source_app":                     "web",
				"source_version":                 "v2.1",
				"source_cluster":                 "east",
				"destination_service":            "echo.shop.svc.cluster.local",
				"destination_service_namespace":  "shop",
				"destination_service_name":       "echo",
				"destination_workload":           "echo-5c4d-xyz12", // no WorkloadName: the pod name
				"destination_canonical_service":  "echo-5c4d-xyz12", // no canonical service, no app: the workload
				"destination_canonical_revision": "latest",
				"destination_workload_namespace": "shop",
				"destination_principal":          "spiffe://cluster.local/ns/shop/sa/echo",
				"destination_app":                "echo-5c4d-xyz12",
				"destination_version":            "latest",
				"destination_cluster":            "Kubernetes",
				"connection_security_policy":     "mutual_tls",
			}),
		},
		"inbound plaintext from an unknown client": {
			info: inboundPlaintext(),
			want: istioDefaults(map[string]string{
				"reporter":                       "destination",
				"destination_service":            "unknown", // no Service
				"destination_workload":           "echo-5c4d-xyz12",
				"destination_canonical_service":  "echo-5c4d-xyz12",
				"destination_canonical_revision": "latest",
				"destination_workload_namespace": "shop",
				"destination_principal":          "spiffe://cluster.local/ns/shop/sa/echo",
				"destination_app":                "echo-5c4d-xyz12",
				"destination_version":            "latest",
				"destination_cluster":            "Kubernetes",
				"connection_security_policy":     "unknown",
			}),
		},
		"app and version labels stand in for the canonical ones": {
			info: ConnInfo{Reporter: ReporterDestination, Destination: Peer{Workload: appOnly}},
			want: istioDefaults(map[string]string{
				"reporter":                       "destination",
				"destination_workload":           "echo-5c4d-xyz12",
				"destination_canonical_service":  "echo",
				"destination_canonical_revision": "v1",
				"destination_workload_namespace": "shop",
				"destination_app":                "echo",
				"destination_version":            "v1",
				"destination_cluster":            "west",
			}),
		},
		"pod addressed directly over HBONE, IPv4-mapped": {
			info: mapped,
			want: istioDefaults(map[string]string{
				"reporter":                       "source",
				"source_workload":                "web",
				"source_canonical_service":       "web-frontend",
				"source_canonical_revision":      "v2",
				"source_workload_namespace":      "shop",
				"source_principal":               "spiffe://cluster.local/ns/shop/sa/web",
				"source_app":                     "web",
				"source_version":                 "v2.1",
				"source_cluster":                 "east",
				"destination_service":            "unknown",
				"destination_workload":           "echo-5c4d-xyz12",
				"destination_canonical_service":  "echo-5c4d-xyz12",
				"destination_canonical_revision": "latest",
				"destination_workload_namespace": "shop",
				"destination_principal":          "spiffe://cluster.local/ns/shop/sa/echo",
				"destination_app":                "echo-5c4d-xyz12",
				"destination_version":            "latest",
				"destination_cluster":            "Kubernetes",
				"connection_security_policy":     "mutual_tls",
			}),
		},
		"nothing known": {
			info: ConnInfo{},
			want: istioDefaults(nil),
		},
		"metadata that is not UTF-8": {
			info: ConnInfo{Reporter: ReporterSource, Source: Peer{Workload: &state.Workload{Namespace: "shop", Name: "bad\xffname"}}},
			want: istioDefaults(map[string]string{
				"reporter":                  "source",
				"source_workload":           "bad\uFFFDname",
				"source_canonical_service":  "bad\uFFFDname",
				"source_canonical_revision": "latest",
				"source_workload_namespace": "shop",
				"source_app":                "bad\uFFFDname",
				"source_version":            "latest",
				"source_cluster":            "Kubernetes",
			}),
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m := newTestMetrics(t)
			m.Open(tt.info).Close(FlagNone, nil)
			for _, metric := range []string{opened, closed} {
				got := gathered(t, m.reg, metric)
				if len(got) != 1 {
					t.Fatalf("%s: %d series, want 1", metric, len(got))
				}
				for _, d := range diffLabels(got[0].labels, tt.want) {
					t.Errorf("%s: %s", metric, d)
				}
			}
		})
	}
}

func TestBytes(t *testing.T) {
	t.Run("counted at close", func(t *testing.T) {
		m := newTestMetrics(t)
		c := m.Open(outboundMTLS())
		c.Received(100) // client → server
		c.Sent(2500)    // server → client
		c.Received(20)
		c.Close(FlagNone, nil)

		if got := value(t, m.reg, received, nil); got != 120 {
			t.Errorf("%s = %v, want 120", received, got)
		}
		if got := value(t, m.reg, sentB, nil); got != 2500 {
			t.Errorf("%s = %v, want 2500", sentB, got)
		}
	})

	t.Run("visible at a scrape while open", func(t *testing.T) {
		m := newTestMetrics(t)
		c := m.Open(outboundMTLS())
		c.Sent(1000)
		if got := value(t, m.reg, sentB, nil); got != 1000 {
			t.Errorf("first scrape: %s = %v, want 1000", sentB, got)
		}
		c.Sent(500)
		c.Received(7)
		if got := value(t, m.reg, sentB, nil); got != 1500 {
			t.Errorf("second scrape: %s = %v, want 1500", sentB, got)
		}
		if got := value(t, m.reg, received, nil); got != 7 {
			t.Errorf("second scrape: %s = %v, want 7", received, got)
		}
		c.Close(FlagNone, nil)
		c.Sent(99) // after close: not reported
		if got := value(t, m.reg, sentB, nil); got != 1500 {
			t.Errorf("after close: %s = %v, want 1500 (counted once)", sentB, got)
		}
	})

	t.Run("same labels add up across connections", func(t *testing.T) {
		m := newTestMetrics(t)
		for i := range 3 {
			c := m.Open(outboundMTLS())
			c.Sent(10 * (i + 1))
			c.Close(FlagNone, nil)
		}
		if got := len(gathered(t, m.reg, sentB)); got != 1 {
			t.Errorf("%s has %d series, want 1", sentB, got)
		}
		if got := value(t, m.reg, sentB, nil); got != 60 {
			t.Errorf("%s = %v, want 60", sentB, got)
		}
		if got := value(t, m.reg, opened, nil); got != 3 {
			t.Errorf("%s = %v, want 3", opened, got)
		}
	})
}

// TestConcurrentBytes: copy loops in both directions and scrapes race; no
// byte is lost or counted twice. Run with -race.
func TestConcurrentBytes(t *testing.T) {
	m := newTestMetrics(t)
	conns := []*Conn{m.Open(outboundMTLS()), m.Open(inboundPlaintext())}
	const writes, size = 2000, 3
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			for range writes {
				c.Sent(size)
			}
		})
		wg.Go(func() {
			for range writes {
				c.Received(size)
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := m.reg.Gather(); err != nil {
				t.Errorf("Gather: %v", err)
				return
			}
		}
	})
	wg.Wait()
	for _, c := range conns {
		c.Close(FlagNone, nil)
	}
	want := float64(len(conns) * writes * size)
	if got := value(t, m.reg, sentB, nil); got != want {
		t.Errorf("%s = %v, want %v", sentB, got, want)
	}
	if got := value(t, m.reg, received, nil); got != want {
		t.Errorf("%s = %v, want %v", received, got, want)
	}
}

func TestActiveConnections(t *testing.T) {
	const active = "weft_ztunnel_active_connections"
	m := newTestMetrics(t)
	out1, out2 := m.Open(outboundMTLS()), m.Open(outboundMTLS())
	in := m.Open(inboundPlaintext())
	check := func(step string, wantOut, wantIn float64) {
		t.Helper()
		if got := value(t, m.reg, active, map[string]string{"direction": "outbound"}); got != wantOut {
			t.Errorf("%s: outbound = %v, want %v", step, got, wantOut)
		}
		if got := value(t, m.reg, active, map[string]string{"direction": "inbound"}); got != wantIn {
			t.Errorf("%s: inbound = %v, want %v", step, got, wantIn)
		}
	}
	check("open", 2, 1)
	out1.Close(FlagNone, nil)
	out1.Close(FlagNone, nil) // a second Close changes nothing
	check("one outbound closed", 1, 1)
	out2.Close(FlagNone, nil)
	in.Close(FlagNone, nil)
	check("all closed", 0, 0)
	if got := value(t, m.reg, closed, nil); got != 3 {
		t.Errorf("%s = %v, want 3", closed, got)
	}
}

func TestCloseFlagsAndErrors(t *testing.T) {
	tests := map[string]struct {
		flags     ResponseFlags
		err       error
		wantFlags string
		wantKind  string // "" = no error counted
	}{
		"clean":               {flags: FlagNone, wantFlags: "-"},
		"empty flags":         {flags: "", wantFlags: "-"},
		"reset mid-transfer":  {flags: FlagNone, err: &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, wantFlags: "-", wantKind: "reset"},
		"upstream refused":    {flags: FlagConnectFailure, err: fmt.Errorf("dial 10.1.1.7:8080: %w", syscall.ECONNREFUSED), wantFlags: "CONNECT", wantKind: "refused"},
		"kind from the error": {flags: FlagConnectFailure, err: kindErr("hbone_status"), wantFlags: "CONNECT", wantKind: "hbone_status"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m := newTestMetrics(t)
			m.Open(outboundMTLS()).Close(tt.flags, tt.err)

			got := gathered(t, m.reg, closed)
			if len(got) != 1 || got[0].labels["response_flags"] != tt.wantFlags {
				t.Errorf("%s = %v, want one series with response_flags=%q", closed, got, tt.wantFlags)
			}
			// Opened and the bytes stay under the labels of the open.
			if got := value(t, m.reg, opened, map[string]string{"response_flags": "-"}); got != 1 {
				t.Errorf("%s{response_flags=\"-\"} = %v, want 1", opened, got)
			}
			errs := gathered(t, m.reg, "weft_ztunnel_connection_errors_total")
			if tt.wantKind == "" {
				if len(errs) != 0 {
					t.Errorf("errors = %v, want none", errs)
				}
				return
			}
			want := map[string]string{"direction": "outbound", "kind": tt.wantKind}
			if len(errs) != 1 || !includes(errs[0].labels, want) || errs[0].value != 1 {
				t.Errorf("errors = %v, want one series %v = 1", errs, want)
			}
		})
	}
}

type kindErr string

func (k kindErr) Error() string     { return "hbone: " + string(k) }
func (k kindErr) ErrorKind() string { return string(k) }

func TestDenied(t *testing.T) {
	tests := map[string]struct {
		policy, reason string
		wantReason     string
	}{
		"by a policy":     {policy: "shop/allow-web", reason: "source not allowed", wantReason: "shop/allow-web"},
		"by default":      {reason: "strict mode", wantReason: "strict mode"},
		"nothing said":    {wantReason: "unknown"},
		"policy, no text": {policy: "shop/invalid", wantReason: "shop/invalid"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m := newTestMetrics(t)
			info := inboundPlaintext()
			info.Source.Identity = webID
			m.Denied(info, tt.policy, tt.reason)

			denied := gathered(t, m.reg, "weft_ztunnel_connections_denied_total")
			want := map[string]string{
				"reporter":                       "destination",
				"destination_workload":           "echo-5c4d-xyz12",
				"destination_workload_namespace": "shop",
				"source_principal":               "spiffe://cluster.local/ns/shop/sa/web",
				"reason_policy":                  tt.wantReason,
			}
			if len(denied) != 1 || denied[0].value != 1 {
				t.Fatalf("denied = %v, want one series = 1", denied)
			}
			for _, d := range diffLabels(denied[0].labels, want) {
				t.Errorf("denied: %s", d)
			}
			// Istio's ztunnel: opened with "-", closed with DENY.
			if got := value(t, m.reg, opened, map[string]string{"response_flags": "-", "reporter": "destination"}); got != 1 {
				t.Errorf("%s{response_flags=\"-\"} = %v, want 1", opened, got)
			}
			if got := value(t, m.reg, closed, map[string]string{"response_flags": "DENY"}); got != 1 {
				t.Errorf("%s{response_flags=\"DENY\"} = %v, want 1", closed, got)
			}
			if got := value(t, m.reg, "weft_ztunnel_active_connections", nil); got != 0 {
				t.Errorf("active = %v, want 0", got)
			}
			for _, name := range []string{sentB, received} {
				if got := value(t, m.reg, name, nil); got != 0 {
					t.Errorf("%s = %v, want 0", name, got)
				}
			}
			if got := gathered(t, m.reg, closed); len(got) != 1 {
				t.Errorf("%s = %v, want only the DENY series", closed, got)
			}
		})
	}
}

func TestFailed(t *testing.T) {
	m := newTestMetrics(t)
	info := ConnInfo{
		Reporter:    ReporterDestination,
		Source:      Peer{Addr: netip.MustParseAddrPort("10.1.0.5:40312")},
		Destination: Peer{Addr: netip.MustParseAddrPort("10.1.1.7:15008")},
	}
	m.Failed(info, fmt.Errorf("tls handshake: %w", tls13Alert()))

	errs := gathered(t, m.reg, "weft_ztunnel_connection_errors_total")
	want := map[string]string{"direction": "inbound", "kind": "tls"}
	if len(errs) != 1 || !includes(errs[0].labels, want) {
		t.Errorf("errors = %v, want one series %v", errs, want)
	}
	if got := gathered(t, m.reg, opened); len(got) != 0 {
		t.Errorf("%s = %v, want none: a failed connection was never opened", opened, got)
	}
}

func TestErrorKind(t *testing.T) {
	tests := map[string]struct {
		err  error
		want string
	}{
		"nil":             {nil, ""},
		"canceled":        {fmt.Errorf("copy: %w", context.Canceled), "canceled"},
		"deadline":        {&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, "timeout"},
		"net timeout":     {timeoutErr{}, "timeout"},
		"refused":         {os.NewSyscallError("connect", syscall.ECONNREFUSED), "refused"},
		"reset":           {syscall.ECONNRESET, "reset"},
		"broken pipe":     {fmt.Errorf("write: %w", syscall.EPIPE), "broken_pipe"},
		"unreachable":     {syscall.EHOSTUNREACH, "unreachable"},
		"eof":             {fmt.Errorf("read preface: %w", errUnexpectedEOF()), "eof"},
		"untrusted peer":  {fmt.Errorf("verify: %w", spiffe.ErrUntrusted), "tls"},
		"tls alert":       {tls13Alert(), "tls"},
		"own kind first":  {fmt.Errorf("outer: %w", errors.Join(kindErr("pool_closed"), syscall.ECONNRESET)), "pool_closed"},
		"anything else":   {errors.New("something"), "other"},
		"text not parsed": {errors.New("connection reset by peer"), "other"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ErrorKind(tt.err); got != tt.want {
				t.Errorf("ErrorKind(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// TestRegisterTwice: a second Metrics on the same registry is an error,
// not a panic.
func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg, nil); err != nil {
		t.Fatalf("first New: %v", err)
	}
	if _, err := New(reg, nil); err == nil {
		t.Errorf("second New on the same registry: err = nil, want an error")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func errUnexpectedEOF() error { return fmt.Errorf("short read: %w", io.ErrUnexpectedEOF) }

// tls13Alert is what a client sees when the server rejects its certificate
// (alert 42, bad_certificate).
func tls13Alert() error { return &net.OpError{Op: "remote error", Err: tls.AlertError(42)} }
