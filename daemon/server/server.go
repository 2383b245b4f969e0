// Package server wires weft-agent together: the API client, the eBPF
// datapath, the node-proxy handoff socket, the CNI socket, the enrollment
// controller and the metrics endpoint, all living and ending with one
// context. cmd/weft-agent only parses flags into a Config.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
	"github.com/weftmesh/weft/daemon/agent"
	"github.com/weftmesh/weft/daemon/cniinstall"
	"github.com/weftmesh/weft/daemon/cniserver"
	"github.com/weftmesh/weft/daemon/datapath"
	"github.com/weftmesh/weft/daemon/handoff"
)

// Config is weft-agent's configuration.
type Config struct {
	NodeName          string
	InstallNamespace  string
	Kubeconfig        string // "" = in-cluster
	PinRoot           string
	CgroupPath        string // "" = the cgroup v2 root
	SocketDir         string // ztunnel.sock and cni.sock live here
	ProcRoot          string
	MetricsAddr       string // "" = off
	ExcludeNamespaces []string
	SocketMark        uint32
	// CNI, when Install is set, chains weft-cni into the node's CNI config.
	CNI CNIConfig
}

// CNIConfig is where the node's CNI files are (as this container sees them)
// and what the plugin is told.
type CNIConfig struct {
	Install        bool
	ConfDir        string // e.g. /host/etc/cni/net.d
	BinDir         string // e.g. /host/opt/cni/bin
	Binary         string // the weft-cni executable to copy
	HostKubeconfig string // the plugin's kubeconfig path on the node
	FailOpen       bool
}

// InstallConfig is the cniinstall configuration for cfg.
func InstallConfig(cfg Config) cniinstall.Config {
	return cniinstall.Config{
		ConfDir: cfg.CNI.ConfDir, BinDir: cfg.CNI.BinDir, Binary: cfg.CNI.Binary,
		HostSocket: CNISocket(cfg.SocketDir), HostKubeconfig: cfg.CNI.HostKubeconfig, FailOpen: cfg.CNI.FailOpen,
		TokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
		CAFile:    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
		APIServer: cniinstall.APIServerFromEnv(),
	}
}

// ProxySocket is the node proxy's handoff socket in dir.
func ProxySocket(dir string) string { return filepath.Join(dir, "ztunnel.sock") }

// CNISocket is the CNI plugin's socket in dir.
func CNISocket(dir string) string { return filepath.Join(dir, "cni.sock") }

// Run runs the agent until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.NodeName == "" {
		return errors.New("run agent: --node-name (or NODE_NAME) is required")
	}
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	rc.UserAgent = "weft-agent/" + cfg.NodeName
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("create api client: %w", err)
	}
	dp, err := datapath.Open(cfg.PinRoot, cfg.CgroupPath, cfg.SocketMark)
	if err != nil {
		return err
	}
	defer dp.Close() // pins stay: redirection continues while the agent restarts
	log.Info("datapath loaded", "pinRoot", cfg.PinRoot, "cgroup", cfg.CgroupPath)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), dp.Collector())

	var a *agent.Agent
	hs := handoff.New(ProxySocket(cfg.SocketDir), log, func() []handoff.Enrolled {
		var out []handoff.Enrolled
		for _, e := range a.Snapshot() {
			out = append(out, handoff.Enrolled{Workload: toInpod(e.Workload), Netns: e.Netns})
		}
		return out
	})
	a, err = agent.New(agent.Config{
		NodeName: cfg.NodeName, ProcRoot: cfg.ProcRoot, InstallNamespace: cfg.InstallNamespace,
		ExcludeNamespaces: cfg.ExcludeNamespaces,
	}, client, dp, proxy{hs}, reg, log.With("component", "agent"))
	if err != nil {
		return err
	}
	cs := cniserver.New(CNISocket(cfg.SocketDir), cniEnroller{a}, log)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(ctx) })
	// The proxy's snapshot and CNI requests need the restored state.
	afterReady := func(run func(context.Context) error) func() error {
		return func() error {
			select {
			case <-a.Ready():
				return run(ctx)
			case <-ctx.Done():
				return nil
			}
		}
	}
	g.Go(afterReady(hs.Run))
	g.Go(afterReady(cs.Run))
	if cfg.CNI.Install {
		// Chain the plugin only once its socket answers (it fails closed).
		g.Go(func() error {
			select {
			case <-cs.Ready():
				return cniinstall.Run(ctx, InstallConfig(cfg), log.With("component", "install-cni"))
			case <-ctx.Done():
				return nil
			}
		})
	}
	if cfg.MetricsAddr != "" {
		g.Go(func() error { return serveMetrics(ctx, cfg.MetricsAddr, reg) })
	}
	return g.Wait()
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("load in-cluster config (or pass --kubeconfig): %w", err)
	}
	return rc, nil
}

func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { // owned by serveMetrics: ends with ctx
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}

// proxy adapts the handoff server to the agent's Proxy.
type proxy struct{ s *handoff.Server }

func (p proxy) AddWorkload(ctx context.Context, w agent.Workload, ns *os.File) error {
	return p.s.Add(ctx, handoff.Enrolled{Workload: toInpod(w), Netns: ns})
}

func (p proxy) RemoveWorkload(ctx context.Context, uid string, drain bool) error {
	return p.s.Remove(ctx, uid, drain)
}

func toInpod(w agent.Workload) inpodv1.Workload {
	return inpodv1.Workload{UID: w.UID, Namespace: w.Namespace, Name: w.Name, ServiceAccount: w.ServiceAccount,
		Node: w.Node, IPs: w.IPs, NetnsCookie: w.NetnsCookie}
}

// cniEnroller adapts the agent to the CNI server.
type cniEnroller struct{ a *agent.Agent }

func (c cniEnroller) CNIAdd(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	ok, reason, err := c.a.EnrollFromCNI(ctx, req.PodNamespace, req.PodName, types.UID(req.PodUID), req.Netns, req.IPs)
	if err != nil {
		return cniv1.Response{}, err
	}
	return cniv1.Response{Enrolled: ok, Reason: reason}, nil
}

func (c cniEnroller) CNIDel(ctx context.Context, req cniv1.DelRequest) error {
	return c.a.ReleaseFromCNI(ctx, types.UID(req.PodUID))
}

func (c cniEnroller) CNICheck(_ context.Context, req cniv1.AddRequest) error {
	if !c.a.IsEnrolled(types.UID(req.PodUID)) {
		return fmt.Errorf("pod %s/%s is not enrolled", req.PodNamespace, req.PodName)
	}
	return nil
}
