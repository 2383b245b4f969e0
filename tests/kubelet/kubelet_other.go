//go:build !linux

package kubelet

import (
	"context"
	"errors"
	"log/slog"
)

// Run is only implemented on Linux.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return errors.ErrUnsupported
}

// Shim is only implemented on Linux.
func Shim(args []string) error {
	return errors.ErrUnsupported
}
