// Command weft is weft's command-line tool. `weft check` is the node
// preflight: can this kernel and host run weft's eBPF datapath? `weft
// observe` prints the mesh's flows (Hubble's formats), `weft stat` a
// workload's golden signals, `weft status` the installation's health;
// `weft version` prints the build. The logic lives in internal/ packages; this
// file only wires flags to them. The CLI must never link a component
// (daemon, ztunnel, l7proxy, operator) or tests/ (deps_test.go).
//
// Exit codes: 0 success, 1 a check failed, the installation is unhealthy
// (or another runtime error), 2 bad usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the CLI with args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	var uerr usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errChecksFailed):
		return exitFailed // the report says why
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "weft: %v\nRun '%s --help' for usage.\n", err, uerr.command)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "weft: %v\n", err)
		return exitFailed
	}
}

// usageError marks an error as bad usage (exit 2) of a command ("weft check").
type usageError struct {
	error
	command string
}

func (e usageError) Unwrap() error { return e.error }

// usageArgs marks the errors of an argument validator as bad usage.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err, cmd.CommandPath()}
		}
		return nil
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "weft",
		Short: "weft: a sidecar-less eBPF service mesh for Kubernetes",
		// Unknown subcommands are arguments to the root: report them as usage.
		Args:          usageArgs(cobra.NoArgs),
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err, cmd.CommandPath()} })
	root.AddCommand(newCheckCommand(), newObserveCommand(), newStatCommand(), newStatusCommand(), newVersionCommand())
	return root
}
