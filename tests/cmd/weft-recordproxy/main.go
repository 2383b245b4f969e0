// Command weft-recordproxy is the stand-in node proxy of weft's tests: it
// connects to the agent's handoff socket, opens every enrolled pod's
// listeners inside the pod's netns and records each accepted connection as a
// JSON line. It only maps flags onto package tests/recordproxy, which holds
// the logic and documents the behaviour.
//
// It runs until SIGINT or SIGTERM. Logs go to stderr as JSON lines. Exit
// codes: 0 after a signal, 1 on a runtime failure, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/tests/recordproxy"
)

// openOrigDstMap opens the eBPF original-destination map pinned at path. It
// is nil until the datapath's lookup is wired in; --orig-dst-map then fails
// rather than silently recording no destinations.
var openOrigDstMap func(path string) (lookup recordproxy.OrigDstLookup, closeMap func() error, err error)

// usageError marks errors of flags and arguments (exit code 2).
type usageError struct{ error }

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], logger)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, logger *slog.Logger) int {
	cmd := newCmd(logger)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	logger.Error("weft-recordproxy failed", "error", err.Error())
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newCmd(logger *slog.Logger) *cobra.Command {
	var (
		cfg        recordproxy.Config
		origDstMap string
	)
	cmd := &cobra.Command{
		Use:           "weft-recordproxy --socket PATH --record-file PATH",
		Short:         "Stand-in node proxy that records redirected connections",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Socket == "" || cfg.RecordFile == "" {
				return usageError{errors.New("--socket and --record-file are required")}
			}
			if cfg.Mark == 0 {
				return usageError{errors.New("--mark must not be 0")}
			}
			if origDstMap != "" {
				if openOrigDstMap == nil {
					return usageError{fmt.Errorf("--orig-dst-map %s: original-destination lookup not wired into this build yet", origDstMap)}
				}
				lookup, closeMap, err := openOrigDstMap(origDstMap)
				if err != nil {
					return fmt.Errorf("open orig-dst map %s: %w", origDstMap, err)
				}
				defer closeMap()
				cfg.OrigDst = lookup
			}
			return recordproxy.New(cfg, logger).Run(cmd.Context())
		},
	}
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := cmd.Flags()
	f.StringVar(&cfg.Socket, "socket", "", "agent's handoff socket (unixpacket); retried until it exists")
	f.StringVar(&cfg.RecordFile, "record-file", "", "file that receives one JSON line per accepted connection (appended)")
	f.Uint32Var(&cfg.Mark, "mark", recordproxy.DefaultMark, "SO_MARK of every socket created in a pod netns (0x prefix for hex)")
	f.StringVar(&origDstMap, "orig-dst-map", "", "pinned eBPF original-destination map; unset: outbound origDst is recorded as \"\" and the connection closed")
	return cmd
}
