package testapp

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		cfg  SleepConfig
		want int
	}{
		{name: "signal", ctx: cancelled, cfg: SleepConfig{}, want: 0},
		{name: "signal before exit time", ctx: cancelled, cfg: SleepConfig{ExitAfter: time.Hour, ExitCode: 3}, want: 0},
		{name: "exit time", ctx: t.Context(), cfg: SleepConfig{ExitAfter: time.Millisecond, ExitCode: 3}, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = testLogger(t)
			if got := Sleep(tt.ctx, tt.cfg); got != tt.want {
				t.Errorf("Sleep(%+v) = %d, want %d", tt.cfg, got, tt.want)
			}
		})
	}
}
