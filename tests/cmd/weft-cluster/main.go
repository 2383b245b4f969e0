// Command weft-cluster runs weft's local Kubernetes cluster (package
// tests/cluster): `up`, `down`, `status` and `exec` for developers and the
// demo, and the hidden `node` and `shim` modes the harness itself starts
// inside node and pod namespaces.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/tests/cluster"
	"github.com/weftmesh/weft/tests/kubelet"
)

func main() {
	// The shim runs once per container start: keep it off cobra's path.
	if len(os.Args) > 1 && os.Args[1] == "shim" {
		if err := kubelet.Shim(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "weft-cluster shim:", err)
			os.Exit(127)
		}
		return
	}
	if err := newRoot().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var stateRoot string
	root := &cobra.Command{
		Use:           "weft-cluster",
		Short:         "Run weft's local Kubernetes cluster (real control plane, netns nodes and pods)",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.PersistentFlags().StringVar(&stateRoot, "state-root", cluster.DefaultStateRoot, "directory holding the clusters' run directories")
	root.AddCommand(upCmd(&stateRoot), downCmd(&stateRoot), statusCmd(&stateRoot), execCmd(&stateRoot),
		kubeconfigCmd(&stateRoot), serveCmd(&stateRoot), meshConfigCmd(&stateRoot), nodeCmd())
	return root
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type clusterFlags struct {
	name  string
	nodes int
	cni   string
}

func (f *clusterFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.name, "name", "weft", "cluster name")
	cmd.Flags().IntVar(&f.nodes, "nodes", 2, "number of nodes")
	cmd.Flags().StringVar(&f.cni, "cni", "bridge", "pod network: bridge or ptp")
}

// readyFile is what `serve` writes once its cluster is up.
type readyFile struct {
	RunID      string  `json:"runID"`
	Kubeconfig string  `json:"kubeconfig"`
	Seconds    float64 `json:"seconds"`
	Error      string  `json:"error,omitempty"`
}

func findRuns(stateRoot, name string) []cluster.RunInfo {
	var out []cluster.RunInfo
	for _, r := range cluster.List(stateRoot) {
		if name == "" || r.Name == name || r.RunID == name {
			out = append(out, r)
		}
	}
	return out
}

func upCmd(stateRoot *string) *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a cluster in the background and wait until it is ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			began := time.Now()
			for _, r := range findRuns(*stateRoot, f.name) {
				if r.OwnerAlive && r.Ready {
					fmt.Printf("cluster %q is already up (run %s)\nexport KUBECONFIG=%s\n", f.name, r.RunID, r.Kubeconfig)
					return nil
				}
			}
			if err := os.MkdirAll(*stateRoot, 0o755); err != nil {
				return err
			}
			ready := filepath.Join(*stateRoot, f.name+".ready.json")
			os.Remove(ready)
			logPath := filepath.Join(*stateRoot, f.name+".log")
			logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			defer logf.Close()
			self, err := os.Executable()
			if err != nil {
				return err
			}
			serve := exec.Command(self, "serve", "--state-root", *stateRoot, "--name", f.name,
				"--nodes", fmt.Sprint(f.nodes), "--cni", f.cni, "--ready-file", ready)
			serve.Stdout, serve.Stderr = logf, logf
			serve.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this command
			if err := serve.Start(); err != nil {
				return fmt.Errorf("start cluster owner: %w", err)
			}
			exited := make(chan error, 1)
			go func() { exited <- serve.Wait() }()
			fmt.Printf("starting cluster %q (%d nodes, %s CNI); log: %s\n", f.name, f.nodes, f.cni, logPath)
			for {
				select {
				case err := <-exited:
					return fmt.Errorf("cluster owner exited (%v); see %s", err, logPath)
				case <-time.After(200 * time.Millisecond):
				}
				data, err := os.ReadFile(ready)
				if err != nil {
					continue
				}
				var rf readyFile
				if err := json.Unmarshal(data, &rf); err != nil {
					continue
				}
				if rf.Error != "" {
					return fmt.Errorf("cluster failed to start: %s (log: %s)", rf.Error, logPath)
				}
				fmt.Printf("cluster %q up in %.1fs (cluster start %.1fs, run %s)\nexport KUBECONFIG=%s\n",
					f.name, time.Since(began).Seconds(), rf.Seconds, rf.RunID, rf.Kubeconfig)
				return nil
			}
		},
	}
	f.register(cmd)
	return cmd
}

func serveCmd(stateRoot *string) *cobra.Command {
	var f clusterFlags
	var ready string
	cmd := &cobra.Command{
		Use:    "serve",
		Short:  "Own a cluster in the foreground until SIGTERM",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			write := func(rf readyFile) {
				data, _ := json.Marshal(rf)
				if ready != "" {
					os.WriteFile(ready, data, 0o644)
				}
			}
			began := time.Now()
			c, err := cluster.Start(ctx, cluster.Config{
				Name: f.name, Nodes: f.nodes, CNI: cluster.CNI(f.cni), StateRoot: *stateRoot, Log: logger(),
			})
			if err != nil {
				write(readyFile{Error: err.Error()})
				return err
			}
			write(readyFile{RunID: c.RunID(), Kubeconfig: c.Kubeconfig(), Seconds: time.Since(began).Seconds()})
			<-ctx.Done()
			stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return c.Stop(stopCtx)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&ready, "ready-file", "", "write the cluster's kubeconfig path here once ready")
	return cmd
}

func downCmd(stateRoot *string) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "down [NAME|RUN-ID]",
		Short: "Stop a cluster (default \"weft\") and remove everything it created",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "weft"
			if len(args) == 1 {
				name = args[0]
			}
			if all {
				name = ""
			}
			runs := findRuns(*stateRoot, name)
			for _, r := range runs {
				if r.OwnerAlive && r.OwnerPID > 0 {
					fmt.Printf("stopping cluster %q (run %s, owner pid %d)\n", r.Name, r.RunID, r.OwnerPID)
					if err := syscall.Kill(r.OwnerPID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
						return fmt.Errorf("signal cluster owner %d: %w", r.OwnerPID, err)
					}
					deadline := time.Now().Add(90 * time.Second)
					for time.Now().Before(deadline) && stillOwned(*stateRoot, r.RunID) {
						time.Sleep(100 * time.Millisecond)
					}
				}
			}
			// Whatever a dead or stuck owner left behind.
			if err := cluster.Reap(*stateRoot); err != nil {
				return err
			}
			for _, r := range findRuns(*stateRoot, name) {
				return fmt.Errorf("cluster %s (run %s) is still running: its owner pid %d did not stop", r.Name, r.RunID, r.OwnerPID)
			}
			fmt.Printf("%d cluster(s) removed\n", len(runs))
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "stop every cluster under the state root")
	return cmd
}

func stillOwned(stateRoot, rid string) bool {
	for _, r := range cluster.List(stateRoot) {
		if r.RunID == rid && r.OwnerAlive {
			return true
		}
	}
	return false
}

func statusCmd(stateRoot *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show clusters, their nodes and pods; exit 1 when NAME is not running",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			runs := findRuns(*stateRoot, name)
			if len(runs) == 0 {
				fmt.Println("no clusters")
				if name != "" {
					os.Exit(1)
				}
				return nil
			}
			healthy := true
			for _, r := range runs {
				state := "running"
				switch {
				case !r.OwnerAlive:
					state, healthy = "dead owner (reaped by the next up/down/test)", false
				case !r.Ready:
					state = "starting"
				}
				fmt.Printf("cluster %q  run %s  %s  cni %s  owner pid %d  up %s\n  KUBECONFIG=%s\n",
					r.Name, r.RunID, state, r.CNI, r.OwnerPID, time.Since(r.Created).Round(time.Second), r.Kubeconfig)
				if !r.OwnerAlive || !r.Ready {
					continue
				}
				c, err := cluster.Attach(*stateRoot, r.RunID)
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				err = printNodes(ctx, c)
				cancel()
				if err != nil {
					healthy = false
					fmt.Println("  ", err)
				}
			}
			if !healthy && name != "" {
				os.Exit(1)
			}
			return nil
		},
	}
}

func printNodes(ctx context.Context, c *cluster.Cluster) error {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	perNode := map[string][]string{}
	for _, p := range pods.Items {
		perNode[p.Spec.NodeName] = append(perNode[p.Spec.NodeName], p.Namespace+"/"+p.Name+"("+string(p.Status.Phase)+")")
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tREADY\tIP\tPOD CIDR\tNETNS\tPODS")
	for _, n := range nodes.Items {
		ready := "False"
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" {
				ready = string(cond.Status)
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", n.Name, ready, c.NodeIP(n.Name), n.Spec.PodCIDR,
			c.NodeNetns(n.Name), strings.Join(perNode[n.Name], " "))
	}
	return tw.Flush()
}

func kubeconfigCmd(stateRoot *string) *cobra.Command {
	return &cobra.Command{
		Use:   "kubeconfig [NAME]",
		Short: "Print the admin kubeconfig path of a running cluster (default \"weft\")",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "weft"
			if len(args) == 1 {
				name = args[0]
			}
			for _, r := range findRuns(*stateRoot, name) {
				if r.OwnerAlive && r.Ready {
					fmt.Println(r.Kubeconfig)
					return nil
				}
			}
			return fmt.Errorf("no running cluster %q (start one with `make cluster-up`)", name)
		},
	}
}

func execCmd(stateRoot *string) *cobra.Command {
	var name, container string
	cmd := &cobra.Command{
		Use:   "exec NAMESPACE/POD -- COMMAND [ARGS...]",
		Short: "Run a command inside a running pod (like kubectl exec)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, pod, ok := strings.Cut(args[0], "/")
			if !ok {
				return fmt.Errorf("pod %q: want NAMESPACE/POD", args[0])
			}
			runs := findRuns(*stateRoot, name)
			if len(runs) == 0 {
				return fmt.Errorf("no cluster %q", name)
			}
			c, err := cluster.Attach(*stateRoot, runs[0].RunID)
			if err != nil {
				return err
			}
			out, err := c.Exec(cmd.Context(), ns, pod, container, args[1:]...)
			os.Stdout.Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "cluster", "weft", "cluster name")
	cmd.Flags().StringVarP(&container, "container", "c", "", "container (default: the first)")
	return cmd
}

func meshConfigCmd(stateRoot *string) *cobra.Command {
	var name, policyFile string
	var opts cluster.MeshOptions
	cmd := &cobra.Command{
		Use:   "mesh-config",
		Short: "Compile the node proxies' mesh state from the cluster and write it to every node (stands in for the operator)",
		Long: `Compile workloads (pods; HBONE in namespaces labelled weft.io/mesh=enabled),
Services with their EndpointSlices, and the compiled policies of --policy (a
JSON array of ztunnel/state Policy objects) into the mesh config every
node's weft-ztunnel reads, and write it to every node. Run it after pods,
Services, labels or policies change. Prints the config version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			runs := findRuns(*stateRoot, name)
			if len(runs) == 0 {
				return fmt.Errorf("no cluster %q", name)
			}
			c, err := cluster.Attach(*stateRoot, runs[0].RunID)
			if err != nil {
				return err
			}
			if policyFile != "" {
				data, err := os.ReadFile(policyFile)
				if err != nil {
					return fmt.Errorf("read policies: %w", err)
				}
				if err := json.Unmarshal(data, &opts.Policies); err != nil {
					return fmt.Errorf("decode policies %s: %w", policyFile, err)
				}
			}
			snap, err := c.SyncMeshConfig(cmd.Context(), opts)
			if err != nil {
				return err
			}
			fmt.Printf("mesh config %s: %d workloads, %d services, %d policies\n", snap.Version, len(snap.Workloads), len(snap.Services), len(snap.Policies))
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "cluster", "weft", "cluster name")
	cmd.Flags().StringVar(&policyFile, "policy", "", "JSON array of compiled policies (ztunnel/state Policy)")
	cmd.Flags().StringVar(&opts.PolicyMode, "policy-mode", "", "permissive (default) or strict")
	return cmd
}

func nodeCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:    "node --config FILE",
		Short:  "Run the node emulator (kubelet) for one node; started by the harness inside the node's netns",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := os.ReadFile(config)
			if err != nil {
				return fmt.Errorf("read node config: %w", err)
			}
			var cfg kubelet.Config
			if err := json.Unmarshal(data, &cfg); err != nil {
				return fmt.Errorf("decode node config %s: %w", config, err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "kubelet", "node", cfg.NodeName)
			return kubelet.Run(ctx, cfg, log)
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "node emulator config (JSON)")
	return cmd
}
