package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/weftmesh/weft/internal/observe"
)

func newObserveCommand() *cobra.Command {
	var (
		kf               kubeFlags
		q                observe.Query
		output, color    string
		node, server     string
		token, tokenFile string
		printNode        bool
		reorder          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Print the mesh's flows (connections, policy verdicts, requests) like hubble observe",
		Long: `observe prints the flows weft's node proxies record: every meshed
connection's open and close (with bytes and duration), connections denied by
policy (DROPPED, with the policy and reason), and HTTP requests and
responses from waypoints, with both ends' pods and SPIFFE identities.

It reads every node's flow API (the weft-agent's Hubble Observer API) and
merges the nodes' flows by time; --node reads one node, --server one
address (unix:///var/run/weft/hubble.sock on a node, or host:port). Over
TCP it pins the agent's certificate (published on its pod) and sends a
bearer token: the kubeconfig's, or --token/--token-file.

Filters are applied by the servers. Values of one flag are ORed, different
flags ANDed; --pod, --namespace, --identity and --port match either end.
Events the server could not keep are printed as EVENTS LOST, never hidden.
The output formats are Hubble's: compact (default), table, dict, and json
(one GetFlowsResponse per line, as hubble observe -o json).`,
		Example: `  weft observe --last 50
  weft observe -f --namespace shop --verdict DROPPED
  weft observe --from-pod shop/web --to-pod shop/api -o json
  weft observe --identity shop/web --since 5m
  weft observe --node node-1 --http-status 5+`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			usage := func(err error) error { return usageError{err, cmd.CommandPath()} }
			format, err := observe.ParseFormat(output)
			if err != nil {
				return usage(err)
			}
			useColor, err := colorFor(color, cmd)
			if err != nil {
				return usage(err)
			}
			if node != "" && server != "" {
				return usage(errors.New("--node and --server cannot be combined"))
			}
			req, err := q.Request(time.Now())
			if err != nil {
				return usage(err)
			}

			ctx := cmd.Context()
			var targets []observe.Target
			if strings.HasPrefix(server, "unix://") {
				targets = []observe.Target{{Address: server}}
			} else {
				kube, cfg, _, err := kf.client()
				if err != nil {
					return err
				}
				tok, err := observe.Token(cfg, token, tokenFile)
				if err != nil {
					return err
				}
				if tok == "" {
					return observe.ErrNoToken
				}
				d := observe.Discovery{Kube: kube, Namespace: kf.weftNS, Token: tok}
				if server != "" {
					t, err := d.TargetAt(ctx, server)
					if err != nil {
						return err
					}
					targets = []observe.Target{t}
				} else {
					var skipped []error
					targets, skipped, err = d.Targets(ctx, node)
					if err != nil {
						return err
					}
					for _, s := range skipped {
						fmt.Fprintf(cmd.ErrOrStderr(), "weft: warning: %v\n", s)
					}
				}
			}

			p := observe.NewPrinter(cmd.OutOrStdout(), cmd.ErrOrStderr(), observe.PrinterOptions{
				Format: format, Color: useColor, NodeName: printNode,
			})
			failed := 0
			err = observe.Observe(ctx, targets, req, reorder, func(res *observerpb.GetFlowsResponse) error {
				if err := p.Write(res); err != nil {
					return err
				}
				if req.GetFollow() {
					return p.Flush()
				}
				return nil
			}, func(err error) {
				failed++
				fmt.Fprintf(cmd.ErrOrStderr(), "weft: warning: %v\n", err)
			})
			if ferr := p.Flush(); err == nil && ferr != nil {
				err = ferr
			}
			var ne *observe.NodeError
			if errors.As(err, &ne) {
				return fmt.Errorf("flows of %d of %d nodes could not be read (see above)", failed, len(targets))
			}
			return err
		},
	}
	f := cmd.Flags()
	kf.register(f)
	f.StringVarP(&output, "output", "o", "compact", "output format: compact, table, dict or json")
	f.StringVar(&color, "color", "auto", "colours: auto (only on a terminal), always or never")
	f.BoolVar(&printNode, "print-node-name", true, "print the node that recorded each flow")
	f.BoolVarP(&q.Follow, "follow", "f", false, "keep printing new flows as they happen")
	f.Uint64Var(&q.Last, "last", 0, fmt.Sprintf("print the last N flows of each node (default %d without --follow, --since or --until)", observe.DefaultLast))
	f.StringVar(&q.Since, "since", "", "only flows since this time: a duration ago (5m) or RFC 3339")
	f.StringVar(&q.Until, "until", "", "only flows until this time: a duration ago (1m) or RFC 3339")
	f.StringSliceVar(&q.Filters.Namespaces, "namespace", nil, "flows from or to pods of this namespace")
	f.StringSliceVar(&q.Filters.Pods, "pod", nil, "flows from or to this pod ([namespace/]name prefix)")
	f.StringSliceVar(&q.Filters.FromPods, "from-pod", nil, "flows from this pod ([namespace/]name prefix)")
	f.StringSliceVar(&q.Filters.ToPods, "to-pod", nil, "flows to this pod ([namespace/]name prefix)")
	f.StringSliceVar(&q.Filters.Identities, "identity", nil, "flows from or to this identity: a SPIFFE ID or namespace/serviceaccount")
	f.StringVar(&q.Filters.TrustDomain, "trust-domain", "cluster.local", "trust domain of namespace/serviceaccount identities")
	f.StringSliceVar(&q.Filters.Verdicts, "verdict", nil, "flows with this verdict: FORWARDED, DROPPED, ...")
	f.StringSliceVar(&q.Filters.Ports, "port", nil, "flows from or to this port")
	f.StringSliceVar(&q.Filters.Protocols, "protocol", nil, "flows of this protocol: tcp, udp, http, ...")
	f.StringSliceVar(&q.Filters.HTTPStatus, "http-status", nil, "HTTP responses with this status: 404, or a class: 5+")
	f.StringSliceVar(&q.Filters.HTTPMethod, "http-method", nil, "HTTP flows with this method")
	f.StringSliceVar(&q.Filters.HTTPPath, "http-path", nil, "HTTP flows whose path matches this regular expression")
	f.StringSliceVar(&q.Filters.Types, "type", nil, "flows of this event type: trace, drop, l7, policy-verdict, or type:subtype")
	f.StringVar(&node, "node", "", "read only this node's flows (found through the API server)")
	f.StringVar(&server, "server", "", "read one flow API: unix:///path/hubble.sock, or host:port (a node's address)")
	f.StringVar(&token, "token", "", "bearer token for nodes' flow APIs (default: the kubeconfig's)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the bearer token for nodes' flow APIs")
	f.DurationVar(&reorder, "reorder-window", 500*time.Millisecond, "with --follow across nodes, how long a flow waits so nodes' flows print in time order")
	return cmd
}

// colorFor decides whether to colour the command's output.
func colorFor(when string, cmd *cobra.Command) (bool, error) {
	switch when {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "auto":
		if os.Getenv("NO_COLOR") != "" {
			return false, nil
		}
		f, ok := cmd.OutOrStdout().(*os.File)
		return ok && term.IsTerminal(int(f.Fd())), nil
	}
	return false, fmt.Errorf("invalid --color %q: want auto, always or never", when)
}
