package proxy

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/weftmesh/weft/ztunnel/telemetry"
)

// TestCutByShutdown: a connection whose pod context ended because the proxy
// stops is recorded as reset by the shutdown, whatever its own end looked
// like; one of a deleted pod (plain cancel), of an ended tunnel stream or of
// a running pod keeps its own error. (ztunnel/server cancels the pods with
// ErrShutdown whatever stops it, a failed component included.)
func TestCutByShutdown(t *testing.T) {
	ioErr := syscall.ECONNRESET
	tests := []struct {
		name     string
		ctx      func() context.Context
		err      error
		shutdown bool
	}{
		{"running", context.Background, ioErr, false},
		{"pod deleted", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, nil, false},
		{"proxy stops", func() context.Context {
			parent, cancel := context.WithCancelCause(context.Background())
			pod, podCancel := context.WithCancel(parent) // inpod's pod context
			t.Cleanup(podCancel)
			cancel(ErrShutdown)
			return pod
		}, nil, true},
		{"a tunnel stream ended", func() context.Context {
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(errors.New("stream ended"))
			return ctx
		}, ioErr, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cutByShutdown(tt.ctx(), tt.err)
			if tt.shutdown {
				if !errors.Is(got, ErrShutdown) || got.Error() != telemetry.ShutdownReason || telemetry.ErrorKind(got) != "shutdown" {
					t.Errorf("cutByShutdown = %v (kind %q), want ErrShutdown %q of kind shutdown", got, telemetry.ErrorKind(got), telemetry.ShutdownReason)
				}
				return
			}
			if got != tt.err {
				t.Errorf("cutByShutdown = %v, want %v", got, tt.err)
			}
		})
	}
}
