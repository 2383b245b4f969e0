// Command weft-cni is weft's chained CNI plugin: it has the node agent
// enroll each new pod of a meshed namespace before the pod's containers
// start (see package daemon/cniplugin). The container runtime runs it with
// CNI_COMMAND set and no arguments; that path is the plugin's alone.
//
// With arguments and no CNI_COMMAND it is the plugin's installer:
// `weft-cni install` (the install-cni container of the chart's weft-agent
// pod) copies itself into the node's CNI bin dir, chains weft-cni into the
// primary conflist, keeps it chained and its kubeconfig fresh, and on SIGTERM
// removes the entry only when the release is being uninstalled (see
// daemon/cniinstall and internal/lifecycle); `weft-cni uninstall` removes
// it by hand.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"

	"github.com/weftmesh/weft/daemon/cniinstall"
	"github.com/weftmesh/weft/daemon/cniplugin"
	kubeconfigpkg "github.com/weftmesh/weft/internal/kubeconfig"
	"github.com/weftmesh/weft/internal/lifecycle"
	"github.com/weftmesh/weft/internal/logflags"
)

func main() {
	if os.Getenv("CNI_COMMAND") != "" || len(os.Args) < 2 {
		cniplugin.Main()
		return
	}
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-cni:", err)
		os.Exit(1)
	}
}

// uninstallTimeout bounds the question "is this an uninstall?" at SIGTERM,
// well inside the pod's termination grace period.
const uninstallTimeout = 5 * time.Second

func newCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "weft-cni",
		Short:         "weft's chained CNI plugin (run by the container runtime with CNI_COMMAND) and its installer",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var (
		cfg                 cniinstall.Config
		namespace, ds       string
		kubeconfig          string
		logFormat, logLevel string
	)
	files := func(cmd *cobra.Command) {
		f := cmd.Flags()
		f.StringVar(&cfg.ConfDir, "cni-conf-dir", "/host/etc/cni/net.d", "the node's CNI config dir, as mounted here")
		f.StringVar(&cfg.BinDir, "cni-bin-dir", "/host/opt/cni/bin", "the node's CNI bin dir, as mounted here")
		f.StringVar(&cfg.HostKubeconfig, "cni-kubeconfig", "/etc/cni/net.d/weft-cni.kubeconfig", "the plugin's kubeconfig path on the node")
		f.StringVar(&logFormat, "log-format", "json", "log format: json or text")
		f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	}

	install := &cobra.Command{
		Use:   "install",
		Short: "keep weft-cni chained into the node's CNI config until SIGTERM; remove it then only on an uninstall",
		Long: `install copies this binary into the node's CNI bin dir and chains weft-cni into
the primary conflist once the agent's CNI socket answers, re-chains it whenever
the conf dir changes, and keeps the plugin's kubeconfig holding this pod's
current ServiceAccount token. On SIGTERM it removes the entry, kubeconfig and
binary only when DaemonSet --daemonset is being uninstalled (gone, deleting, or
annotated ` + lifecycle.Annotation + `=true by the chart's pre-delete hook); on
an upgrade or restart weft-cni stays chained, so new pods of enrolled
namespaces wait for the agent instead of starting unmeshed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logflags.New(logFormat, logLevel)
			if err != nil {
				return err
			}
			if cfg.Binary == "" {
				if cfg.Binary, err = os.Executable(); err != nil {
					return fmt.Errorf("find this executable (or pass --binary): %w", err)
				}
			}
			if cfg.APIServer == "" {
				cfg.APIServer = cniinstall.APIServerFromEnv()
			}
			if namespace == "" {
				return fmt.Errorf("--namespace (or POD_NAMESPACE) is required")
			}
			rc, err := kubeconfigpkg.Load(kubeconfig)
			if err != nil {
				return err
			}
			rc.UserAgent = "weft-cni-install"
			apps, err := appsv1client.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("create api client: %w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log = log.With("component", "install-cni", "node", os.Getenv("NODE_NAME"))
			w := lifecycle.NewWatcher(appsClient{apps}, namespace, ds, log)
			wctx, cancelWatch := context.WithCancel(context.WithoutCancel(ctx))
			watched := make(chan error, 1)
			go func() { watched <- w.Run(wctx) }() // owned here: ended and waited for below
			log.Info("starting weft-cni installer", "confDir", cfg.ConfDir, "binDir", cfg.BinDir, "daemonset", namespace+"/"+ds)
			err = cniinstall.Keep(ctx, cfg, func(ctx context.Context) bool {
				return w.Uninstalling(ctx, uninstallTimeout)
			}, log)
			cancelWatch()
			<-watched
			return err
		},
	}
	files(install)
	f := install.Flags()
	f.StringVar(&cfg.Binary, "binary", "", "the weft-cni executable to install (default: this one)")
	f.StringVar(&cfg.HostSocket, "host-socket", "/var/run/weft/cni.sock", "the agent's CNI socket path on the node, written into the conflist")
	f.StringVar(&cfg.AgentSocket, "agent-socket", "/var/run/weft/cni.sock", "the agent's CNI socket as mounted here; chaining waits until it answers (empty: do not wait)")
	f.BoolVar(&cfg.FailOpen, "fail-open", false, "let pods of enrolled namespaces start unmeshed when the agent is unreachable")
	f.StringVar(&cfg.TokenFile, "token-file", "/var/run/secrets/kubernetes.io/serviceaccount/token", "the ServiceAccount token the plugin's kubeconfig carries")
	f.StringVar(&cfg.CAFile, "ca-file", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "the API server's CA the plugin's kubeconfig carries")
	f.StringVar(&cfg.APIServer, "api-server", "", "the API server URL the plugin uses (default: from KUBERNETES_SERVICE_HOST/PORT)")
	f.DurationVar(&cfg.Every, "interval", 30*time.Second, "how often the entry and token are re-checked besides on conf dir changes")
	f.StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "weft's namespace (default $POD_NAMESPACE)")
	f.StringVar(&ds, "daemonset", "weft-agent", "the DaemonSet whose uninstall removes weft-cni")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file for the API server (default: in-cluster config)")

	uninstall := &cobra.Command{
		Use:   "uninstall",
		Short: "remove weft-cni from the node's CNI config, its kubeconfig and binary, then exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logflags.New(logFormat, logLevel)
			if err != nil {
				return err
			}
			if err := cniinstall.Uninstall(cfg); err != nil {
				return fmt.Errorf("remove weft-cni from %s: %w", cfg.ConfDir, err)
			}
			log.Info("removed weft-cni", "confDir", cfg.ConfDir, "binDir", cfg.BinDir)
			return nil
		},
	}
	files(uninstall)
	root.AddCommand(install, uninstall)
	return root
}

// appsClient gives the apps/v1 client the shape lifecycle.Client asks for
// (the plugin binary links no full clientset).
type appsClient struct{ appsv1client.AppsV1Interface }

func (a appsClient) AppsV1() appsv1client.AppsV1Interface { return a.AppsV1Interface }
