package testapp

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// SignalContext returns a context that is cancelled, with the signal as its
// cause, on SIGINT or SIGTERM. With ignoreSIGTERM the process ignores SIGTERM
// instead, so only SIGINT (or SIGKILL) ends it. Call stop to release the
// signal handlers.
func SignalContext(parent context.Context, ignoreSIGTERM bool) (ctx context.Context, stop context.CancelFunc) {
	if ignoreSIGTERM {
		signal.Ignore(syscall.SIGTERM)
		return signal.NotifyContext(parent, os.Interrupt)
	}
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// SleepConfig configures Sleep.
type SleepConfig struct {
	// ExitAfter, when positive, ends Sleep after that long with ExitCode.
	ExitAfter time.Duration
	ExitCode  int
	// Logger receives the start and end lines; nil discards them.
	Logger *slog.Logger
}

// Sleep blocks until ctx is done, returning exit code 0, or until
// cfg.ExitAfter has passed, returning cfg.ExitCode.
func Sleep(ctx context.Context, cfg SleepConfig) int {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "sleep")
	var expired <-chan time.Time
	if cfg.ExitAfter > 0 {
		t := time.NewTimer(cfg.ExitAfter)
		defer t.Stop()
		expired = t.C
	}
	logger.Info("sleeping", "exitAfter", cfg.ExitAfter.String(), "exitCode", cfg.ExitCode)
	select {
	case <-ctx.Done():
		logger.Info("stopping", "cause", context.Cause(ctx).Error())
		return 0
	case <-expired:
		logger.Info("exit time reached", "exitCode", cfg.ExitCode)
		return cfg.ExitCode
	}
}
