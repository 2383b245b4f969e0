// Command weft-operator is weft's control plane (Deployment weft-operator):
// the mesh CA, the SMI controllers and the per-node config stream. It maps
// flags onto operator/server, which wires the components.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	kubeconfigpkg "github.com/weftmesh/weft/internal/kubeconfig"
	"github.com/weftmesh/weft/internal/lifecycle"
	"github.com/weftmesh/weft/internal/logflags"

	"github.com/weftmesh/weft/operator/server"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-operator:", err)
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
		Use:           "weft-operator",
		Short:         "weft's control plane: mesh CA, SMI controllers, per-node config stream",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logflags.New(logFormat, logLevel)
			if err != nil {
				return err
			}
			if cfg.Namespace == "" {
				return fmt.Errorf("--namespace is required (or set POD_NAMESPACE)")
			}
			srv, err := server.New(cfg, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log.Info("starting weft-operator", "namespace", cfg.Namespace, "grpc", srv.GRPCAddr().String(), "metrics", srv.MetricsAddr().String())
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster config")
	f.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "install namespace: the weft-ca Secret and weft's ServiceAccounts (default $POD_NAMESPACE)")
	f.StringVar(&cfg.CASecret, "ca-secret", "weft-ca", "the mesh CA's Secret in the install namespace (ca.crt/ca.key, or cert-manager's tls.crt/tls.key/ca.crt); generated when missing")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", server.DefaultGRPCAddr, "listen address of the CSR service and the config stream (TLS)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", server.DefaultMetricsAddr, "listen address of /metrics, /healthz and /readyz")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "", "listen address of Go's pprof profiles (empty: off); keep it on localhost")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "trust domain of the mesh's SPIFFE IDs")
	f.StringVar(&cfg.PolicyMode, "policy-mode", "permissive", "SMI policy mode: permissive (unnamed destinations accept anyone) or strict (deny unless allowed)")
	f.DurationVar(&cfg.CertLifetime, "cert-lifetime", 24*time.Hour, "lifetime of workload certificates")
	f.StringSliceVar(&cfg.ExcludeNamespaces, "exclude-namespaces", nil, "namespaces never meshed (as the agent's --exclude-namespaces); the install namespace and kube-system always are")
	f.StringVar(&logFormat, "log-format", "json", "log format: json or text")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.AddCommand(newMarkUninstallingCommand())
	return cmd
}

// newMarkUninstallingCommand is the chart's pre-delete hook: it marks
// weft's DaemonSets as being uninstalled, so that their pods remove the
// node state (eBPF programs, pins, the CNI entry) when they stop, which an
// upgrade's restart must not do; then it stops the operator and deletes
// what the operator created that Helm does not know of (trust-bundle
// ConfigMaps, a CA Secret it generated).
func newMarkUninstallingCommand() *cobra.Command {
	var namespace, kubeconfig, caSecret string
	cmd := &cobra.Command{
		Use:          "mark-uninstalling",
		Short:        "mark weft's DaemonSets as uninstalling (the chart's pre-delete hook)",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if namespace == "" {
				return fmt.Errorf("--namespace is required (or set POD_NAMESPACE)")
			}
			rc, err := kubeconfigpkg.Load(kubeconfig)
			if err != nil {
				return err
			}
			client, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("create API client: %w", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := lifecycle.MarkUninstalling(ctx, client, namespace); err != nil {
				return fmt.Errorf("mark weft in %s uninstalling: %w", namespace, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "weft in namespace %s marked uninstalling\n", namespace)
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if err := lifecycle.RemoveOperatorState(ctx, client, namespace, caSecret, log); err != nil {
				return fmt.Errorf("remove the operator's objects: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "weft's install namespace (default $POD_NAMESPACE)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster config")
	cmd.Flags().StringVar(&caSecret, "ca-secret", "weft-ca", "the mesh CA's Secret: deleted only if the operator generated it")
	return cmd
}
