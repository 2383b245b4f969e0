package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// shutdownGrace bounds how long ServeAdmin waits for requests in flight
// once its context ends; a scrape takes milliseconds.
const shutdownGrace = 5 * time.Second

// ServeAdmin serves the node proxy's admin endpoints on ln until ctx ends,
// then shuts down gracefully and returns nil; it returns an error if
// serving fails first. It closes ln.
//
//   - /metrics and /stats/prometheus (the path Istio's scrape annotations
//     name) serve g in the Prometheus text format.
//   - /healthz/ready answers 200 when ready returns nil, else 503 with the
//     error's text as the reason. A nil ready is always ready.
//
// Profiling is deliberately not served: this port is reachable by whatever
// scrapes it, and Istio keeps pprof on its localhost-only admin port.
func ServeAdmin(ctx context.Context, ln net.Listener, g prometheus.Gatherer, ready func() error, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	metrics := promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
	})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.Handle("GET /stats/prometheus", metrics)
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready != nil {
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("admin server listening", "addr", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("serve admin on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Requests still running after the grace period are cut.
		srv.Close()
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serve admin on %s: %w", ln.Addr(), serr)
	}
	if err != nil {
		return fmt.Errorf("shut down admin server: %w", err)
	}
	return nil
}

// promLogger adapts slog to the logger promhttp reports encoding errors to.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn("serve metrics", "error", fmt.Sprint(v...))
}
