package cluster

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

// RequireRoot skips a test that needs root, unless WEFT_REQUIRE_PRIVILEGED=1
// (set by CI, which runs as root), where it fails instead: a skipped test
// must never look like a pass there.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WEFT_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatal("test needs root and WEFT_REQUIRE_PRIVILEGED=1 is set")
	}
	tb.Skip("test needs root (network namespaces, cgroups, eBPF)")
}

// StartForTest starts a cluster for one test and stops it in Cleanup. The
// harness log goes to the test log.
func StartForTest(tb testing.TB, cfg Config) *Cluster {
	tb.Helper()
	RequireRoot(tb)
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := Start(ctx, cfg)
	if err != nil {
		tb.Fatalf("start cluster: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if tb.Failed() {
			tb.Logf("cluster logs were in %s (removed on stop; set WEFT_KEEP_LOGS=DIR to copy them)", c.Dir())
			if dst := os.Getenv("WEFT_KEEP_LOGS"); dst != "" {
				_ = copyDir(c.run.path("logs"), dst+"/"+c.RunID()+"/logs")
				_ = copyDir(c.run.path("nodes"), dst+"/"+c.RunID()+"/nodes")
			}
		}
		if err := c.Stop(ctx); err != nil {
			tb.Errorf("stop cluster: %v", err)
		}
	})
	return c
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(p))
	return len(p), nil
}

// copyDir copies a directory tree for post-mortem inspection.
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return sh("cp", "-a", src+"/.", dst)
}
