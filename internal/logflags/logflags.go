// Package logflags turns the --log-format and --log-level flags every weft
// binary takes into a *slog.Logger on stderr. It must not import any weft
// component.
package logflags

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// New returns a logger writing format ("json" or "text") at level ("debug",
// "info", "warn", "error") to stderr.
func New(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}
