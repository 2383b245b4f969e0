package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/stat"
)

func newStatCommand() *cobra.Command {
	var (
		kf      kubeFlags
		window  time.Duration
		timeout time.Duration
		output  string
	)
	cmd := &cobra.Command{
		Use:   "stat [namespace/]deployment/NAME | [namespace/]pod/NAME | namespace/NAME",
		Short: "Show workloads' golden signals (connections, bytes, refusals; requests, success, latency) like linkerd viz stat",
		Long: `stat measures a workload's traffic over a window from the nodes' own
metrics (no Prometheus server needed): it scrapes every node's ztunnel
(:15020/metrics) twice, --window apart. For each workload and direction
(inbound: traffic it served; outbound: traffic it sent) it shows TCP
connections opened per second, active connections, bytes per second toward
and from the workload, and the share of connections refused or reset; and,
once waypoints report HTTP, requests per second, success rate (non-5xx) and
latency percentiles.

Kinds may be abbreviated (deploy, po, ns). A pod shows its workload's
signals (metrics are per workload). Without a namespace, a deployment or
pod is in the kubeconfig context's namespace.`,
		Example: `  weft stat shop/deploy/web
  weft stat ns/shop --window 30s
  weft stat po/web-7d9f-abcde -o json`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return usageError{fmt.Errorf("invalid --output %q: want table or json", output), cmd.CommandPath()}
			}
			if window <= 0 {
				return usageError{fmt.Errorf("invalid --window %s: want a positive duration", window), cmd.CommandPath()}
			}
			kube, _, defaultNS, err := kf.client()
			if err != nil {
				return err
			}
			target, err := stat.ParseTarget(args[0], defaultNS)
			if err != nil {
				return usageError{err, cmd.CommandPath()}
			}
			res, err := stat.Run(cmd.Context(), stat.Options{
				Kube: kube, WeftNamespace: kf.weftNS, Window: window,
				HTTP: &http.Client{Timeout: timeout},
				Warn: func(err error) {
					fmt.Fprintf(cmd.ErrOrStderr(), "weft: warning: %v (its traffic is not counted)\n", err)
				},
			}, target)
			if err != nil {
				return err
			}
			if output == "json" {
				return stat.WriteJSON(cmd.OutOrStdout(), res)
			}
			return stat.WriteTable(cmd.OutOrStdout(), res)
		},
	}
	f := cmd.Flags()
	kf.register(f)
	f.DurationVar(&window, "window", 10*time.Second, "time between the two scrapes the rates are computed over")
	f.DurationVar(&timeout, "timeout", 5*time.Second, "timeout of each metrics scrape")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
