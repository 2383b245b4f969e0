package testapp

import (
	"context"
	"log/slog"
	"sync"
	"testing"
)

func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// runner is a server with a blocking Run.
type runner interface {
	Run(ctx context.Context) error
}

// startRun runs srv until the returned stop is called or the test ends.
// stop cancels Run, waits for it and returns its error; it may be called
// more than once.
func startRun(tb testing.TB, srv runner) (stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("Run() = %v, want nil", err)
		}
	})
	return stop
}

func startEcho(tb testing.TB, cfg EchoConfig) (*EchoServer, func() error) {
	tb.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	srv, err := NewEchoServer(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("NewEchoServer() = %v", err)
	}
	return srv, startRun(tb, srv)
}

func startTCPEcho(tb testing.TB, cfg TCPEchoConfig) (*TCPEchoServer, func() error) {
	tb.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	srv, err := NewTCPEchoServer(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("NewTCPEchoServer() = %v", err)
	}
	return srv, startRun(tb, srv)
}
