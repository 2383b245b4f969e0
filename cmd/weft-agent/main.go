// Command weft-agent is weft's per-node agent (DaemonSet weft-agent): it
// loads and pins the eBPF datapath, enrolls the pods of its node whose
// namespace is labelled weft.io/mesh=enabled, and hands their network
// namespaces to the node proxy. `weft-agent --cleanup` removes what this
// agent created on the node, and only that.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/internal/logflags"

	"github.com/weftmesh/weft/bpf/redirect"
	"github.com/weftmesh/weft/daemon/cniinstall"
	"github.com/weftmesh/weft/daemon/datapath"
	"github.com/weftmesh/weft/daemon/server"
)

// version is set at build time: go build -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-agent:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		cfg       server.Config
		cleanup   bool
		logFormat string
		logLevel  string
	)
	cmd := &cobra.Command{
		Use:           "weft-agent",
		Short:         "weft's node agent: eBPF redirection and pod enrollment",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logflags.New(logFormat, logLevel)
			if err != nil {
				return err
			}
			if cfg.CNI.Binary == "" {
				if exe, err := os.Executable(); err == nil {
					cfg.CNI.Binary = filepath.Join(filepath.Dir(exe), "weft-cni")
				}
			}
			if cleanup {
				if err := datapath.Cleanup(cfg.PinRoot, cfg.CgroupPath); err != nil {
					return fmt.Errorf("clean up %s: %w", cfg.PinRoot, err)
				}
				if cfg.CNI.Install {
					if err := cniinstall.Uninstall(server.InstallConfig(cfg)); err != nil {
						return fmt.Errorf("remove weft-cni from %s: %w", cfg.CNI.ConfDir, err)
					}
				}
				log.Info("removed this agent's datapath", "pinRoot", cfg.PinRoot)
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log = log.With("node", cfg.NodeName)
			cfg.Version = version
			log.Info("starting weft-agent", "version", version, "pinRoot", cfg.PinRoot, "socketDir", cfg.SocketDir)
			return server.Run(ctx, cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.StringVar(&cfg.InstallNamespace, "install-namespace", envOr("POD_NAMESPACE", "weft-system"), "weft's own namespace, never meshed (default $POD_NAMESPACE)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	f.StringVar(&cfg.PinRoot, "pin-root", "/sys/fs/bpf/weft", "bpffs directory holding this agent's pinned programs, maps and links")
	f.StringVar(&cfg.CgroupPath, "cgroup-path", "", "cgroup v2 directory the outbound programs attach to (default: the cgroup v2 root)")
	f.StringVar(&cfg.SocketDir, "socket-dir", "/var/run/weft", "directory of the node proxy, CNI and flow (flows-export.sock, hubble.sock) sockets")
	f.StringVar(&cfg.ProcRoot, "proc-root", "/proc", "the host's /proc (pods are found by their cgroup paths)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", ":15021", "Prometheus metrics listen address (empty: off)")
	f.StringSliceVar(&cfg.ExcludeNamespaces, "exclude-namespaces", nil, "namespaces never meshed, besides kube-system and the install namespace")
	f.Uint32Var(&cfg.SocketMark, "socket-mark", redirect.SocketMark, "mark of the node proxy's sockets, which are never redirected")
	f.BoolVar(&cfg.CNI.Install, "cni-install", false, "chain weft-cni into the node's CNI config and keep its kubeconfig fresh")
	f.StringVar(&cfg.CNI.ConfDir, "cni-conf-dir", "/host/etc/cni/net.d", "the node's CNI config dir, as mounted here")
	f.StringVar(&cfg.CNI.BinDir, "cni-bin-dir", "/host/opt/cni/bin", "the node's CNI bin dir, as mounted here")
	f.StringVar(&cfg.CNI.Binary, "cni-binary", "", "the weft-cni executable to install (default: weft-cni beside this binary)")
	f.StringVar(&cfg.CNI.HostKubeconfig, "cni-kubeconfig", "/etc/cni/net.d/weft-cni.kubeconfig", "the plugin's kubeconfig path on the node")
	f.BoolVar(&cfg.CNI.FailOpen, "cni-fail-open", false, "let pods of enrolled namespaces start unmeshed when the agent is unreachable")
	f.IntVar(&cfg.Flows.RingSize, "flows-ring-size", 4096, "flow records the node's flow ring keeps")
	f.StringVar(&cfg.Flows.Addr, "flows-addr", ":4244", "TLS listen address of the flow API (Hubble Observer), callers authorised by TokenReview + SubjectAccessReview (empty: off)")
	f.StringVar(&cfg.Flows.PodName, "pod-name", os.Getenv("POD_NAME"), "this agent's pod, on which the flow API certificate is published (default $POD_NAME)")
	f.StringVar(&cfg.Flows.NodeIP, "node-ip", os.Getenv("NODE_IP"), "this node's IP for the flow API certificate (default $NODE_IP, else the pod's status.hostIP)")
	f.BoolVar(&cleanup, "cleanup", false, "detach and remove everything this agent pinned under --pin-root, then exit")
	f.StringVar(&logFormat, "log-format", "json", "log format: json or text")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
