// Command weft-ztunnel is weft's node proxy (DaemonSet weft-ztunnel): it
// receives enrolled pods' network namespaces from weft-agent, opens each
// pod's listeners inside it and carries the pod's traffic as HBONE mTLS to
// other meshed pods, authorizing inbound connections with the mesh's SMI
// policy. It maps flags onto ztunnel/server, which wires the components.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/logflags"

	"github.com/weftmesh/weft/bpf/redirect"
	"github.com/weftmesh/weft/ztunnel/flowexport"
	"github.com/weftmesh/weft/ztunnel/server"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-ztunnel:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		cfg       server.Config
		logFormat string
		logLevel  string
	)
	cmd := &cobra.Command{
		Use:           "weft-ztunnel",
		Short:         "weft's node proxy: in-pod listeners, HBONE mTLS, L4 policy",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logflags.New(logFormat, logLevel)
			if err != nil {
				return err
			}
			if cfg.PinRoot == "" {
				return fmt.Errorf("--pin-root is required")
			}
			if cfg.OperatorAddr == "" && (cfg.ConfigFile == "" || cfg.CADir == "") {
				return fmt.Errorf("without --operator-addr, --config-file and --ca-dir are required")
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log = log.With("node", os.Getenv("NODE_NAME"))
			log.Info("starting weft-ztunnel", "socket", cfg.Socket, "configFile", cfg.ConfigFile, "admin", cfg.AdminAddr, "flowsSocket", cfg.FlowsSocket)
			return server.Run(ctx, cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Socket, "socket", "/var/run/weft/ztunnel.sock", "the agent's handoff socket")
	f.StringVar(&cfg.PinRoot, "pin-root", "/sys/fs/bpf/weft", "the agent's bpffs pin root (original destinations are read from its orig_dst map)")
	f.StringVar(&cfg.ConfigFile, "config-file", "", "mesh state file (workloads, services, policy), reloaded when it changes")
	f.DurationVar(&cfg.PollInterval, "config-poll", time.Second, "how often the config file is checked for changes")
	f.StringVar(&cfg.CADir, "ca-dir", "/etc/weft/ca", "directory of the file CA (ca.crt+ca.key, or tls.crt+tls.key) that signs this node's workload certificates")
	f.DurationVar(&cfg.CertLifetime, "cert-lifetime", 24*time.Hour, "lifetime of workload certificates (renewed at half-life)")
	f.StringVar(&cfg.AdminAddr, "admin-addr", ":15020", "listen address of /metrics and /healthz/ready")
	f.Uint32Var(&cfg.Mark, "socket-mark", redirect.SocketMark, "SO_MARK of the proxy's sockets in pod netns, which the eBPF programs never redirect")
	f.StringVar(&cfg.OperatorAddr, "operator-addr", "", "the operator's gRPC address (mesh config stream and CA); empty: --config-file and --ca-dir")
	f.StringVar(&cfg.TokenFile, "token-file", "/var/run/secrets/weft/token", "projected ServiceAccount token (audience weft) for the operator")
	f.StringVar(&cfg.TrustBundleFile, "trust-bundle-file", "/var/run/secrets/weft/bundle/ca.crt", "PEM mesh roots that verify the operator until the stream delivers the bundle")
	f.StringVar(&cfg.Node, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "127.0.0.1:15000", "listen address of Go's pprof profiles (empty: off); keep it on localhost")
	f.StringVar(&cfg.FlowsSocket, "flows-socket", flowexport.DefaultSocket, "the agent's flow export socket, where the connections' flow records go (empty: none)")
	f.IntVar(&cfg.FlowsQueue, "flows-queue", flowexport.DefaultQueueSize, "flow records waiting for the agent at most; more are counted as lost")
	f.StringVar(&logFormat, "log-format", "json", "log format: json or text")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
