package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/preflight"
)

// errChecksFailed: at least one check failed; the report was printed.
var errChecksFailed = errors.New("checks failed")

func newCheckCommand() *cobra.Command {
	var (
		opts   preflight.Options
		output string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that this node's kernel and host can run weft's eBPF datapath",
		Long: `check probes the kernel and host weft's agent runs on: kernel version,
BTF, the cgroup v2 mount, a bpffs at the pin root, the eBPF program types,
attach types and helpers weft uses, tcx, loading weft's real programs, and
privileges. With --kubeconfig (or in a pod) it also warns about
NetworkPolicies in enrolled namespaces that would block HBONE (TCP 15008).
Run it as root on the node. It exits 1 when a check fails; warnings do not
fail.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return usageError{fmt.Errorf("invalid --output %q: want text or json", output), cmd.CommandPath()}
			}
			report := preflight.Run(cmd.Context(), opts)
			write := preflight.WriteText
			if output == "json" {
				write = preflight.WriteJSON
			}
			if err := write(cmd.OutOrStdout(), report); err != nil {
				return err
			}
			if !report.OK {
				return errChecksFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.PinRoot, "pin-root", preflight.DefaultPinRoot, "where the agent pins eBPF objects; must be on a bpffs")
	f.StringVar(&opts.Kubeconfig, "kubeconfig", "", "kubeconfig for the NetworkPolicy check (default: in-cluster config, else skipped)")
	f.DurationVar(&opts.APITimeout, "timeout", 10*time.Second, "timeout of each API server request")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
