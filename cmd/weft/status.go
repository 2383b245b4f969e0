package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/status"
)

func newStatusCommand() *cobra.Command {
	var (
		kf      kubeFlags
		timeout time.Duration
		output  string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Check the health of weft's operator, agents and node proxies",
		Long: `status reports the operator (Deployment ready, /readyz when its pod IP
is reachable) and, for every node, the weft-agent (pod ready,
:15021/healthz) and weft-ztunnel (pod ready, :15020/healthz/ready), the
number of running pods enrolled in the mesh, the earliest expiry of the
ztunnel's workload certificates, and the mesh config version it serves
(every node must serve the same one).

It exits 1 when anything is unhealthy, listing each problem.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return usageError{fmt.Errorf("invalid --output %q: want text or json", output), cmd.CommandPath()}
			}
			kube, _, _, err := kf.client()
			if err != nil {
				return err
			}
			r, err := status.Check(cmd.Context(), status.Options{Kube: kube, Namespace: kf.weftNS, HTTP: &http.Client{Timeout: timeout}})
			if err != nil {
				return err
			}
			write := status.WriteText
			if output == "json" {
				write = status.WriteJSON
			}
			if err := write(cmd.OutOrStdout(), r); err != nil {
				return err
			}
			if !r.Healthy {
				return errChecksFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	kf.register(f)
	f.DurationVar(&timeout, "timeout", 3*time.Second, "timeout of each health request")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
