//go:build linux

package kubelet

import (
	"log/slog"
	"os"
	"testing"
	"time"
)

// waitFor polls cond until it holds or timeout passes; msg describes what
// was awaited.
func waitFor(tb testing.TB, timeout time.Duration, msg string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, msg)
		}
		<-tick.C
	}
}

// testLogger logs through tb so output belongs to the test.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// requirePrivileged skips a test that needs root, unless
// WEFT_REQUIRE_PRIVILEGED=1 makes a skip a failure.
func requirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WEFT_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatal("test needs root and WEFT_REQUIRE_PRIVILEGED=1")
	}
	tb.Skip("test needs root")
}
