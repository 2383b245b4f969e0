// Package server wires weft-agent together: the API client, the eBPF
// datapath, the node-proxy handoff socket, the CNI socket, the enrollment
// controller, the flow server (export and Hubble sockets, TLS flow API)
// and the metrics endpoint, all living and ending with one context.
// cmd/weft-agent only parses flags into a Config.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
	"github.com/weftmesh/weft/daemon/agent"
	"github.com/weftmesh/weft/daemon/cniinstall"
	"github.com/weftmesh/weft/daemon/cniserver"
	"github.com/weftmesh/weft/daemon/datapath"
	"github.com/weftmesh/weft/daemon/flows"
	"github.com/weftmesh/weft/daemon/handoff"
	"github.com/weftmesh/weft/internal/kubeconfig"
	"github.com/weftmesh/weft/internal/lifecycle"
)

// Config is weft-agent's configuration.
type Config struct {
	NodeName          string
	InstallNamespace  string
	Kubeconfig        string // "" = in-cluster
	PinRoot           string
	CgroupPath        string // "" = the cgroup v2 root
	SocketDir         string // ztunnel.sock, cni.sock, flows-export.sock and hubble.sock live here
	ProcRoot          string
	MetricsAddr       string // "" = off
	ExcludeNamespaces []string
	SocketMark        uint32
	// CNI, when Install is set, chains weft-cni into the node's CNI config.
	CNI CNIConfig
	// Flows configures the flow server.
	Flows FlowsConfig
	// Version is weft's version, reported by the flow API.
	Version string
}

// FlowsConfig configures the agent's flow server. Its unix sockets are
// FlowsExportSocket and HubbleSocket in the socket dir.
type FlowsConfig struct {
	RingSize int    // records kept; 0 = flows.DefaultRingSize
	Addr     string // TLS flow API listen address, e.g. ":4244"; "" = off
	// PodName is the agent's own pod (in InstallNamespace): its
	// status.hostIP is the certificate's IP SAN when NodeIP is empty, and
	// the certificate is published on it. "" = not published.
	PodName string
	NodeIP  string // the node's IP for the certificate; "" = the pod's hostIP
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

// FlowsExportSocket is the flow producers' socket in dir.
func FlowsExportSocket(dir string) string { return filepath.Join(dir, "flows-export.sock") }

// HubbleSocket is the local flow API (Hubble Observer) socket in dir.
func HubbleSocket(dir string) string { return filepath.Join(dir, "hubble.sock") }

// uninstallCheckTimeout bounds how long a stopping agent asks the API
// server whether it is being uninstalled, when its watch never saw.
const uninstallCheckTimeout = 5 * time.Second

// Run runs the agent until ctx ends. When the agent stops because weft is
// being uninstalled (internal/lifecycle), it removes the node's datapath.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.NodeName == "" {
		return errors.New("run agent: --node-name (or NODE_NAME) is required")
	}
	rc, err := kubeconfig.Load(cfg.Kubeconfig)
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
	// On a restart or an upgrade the pins stay, so redirection continues
	// while the agent is away; only an uninstall removes them (below).
	closeDP := sync.OnceValue(dp.Close)
	defer closeDP()
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
	fs, err := flows.New(flows.Config{
		NodeName: cfg.NodeName, NodeAddress: cfg.Flows.NodeIP, RingSize: cfg.Flows.RingSize, Version: cfg.Version,
		Registerer: reg, Log: log,
	})
	if err != nil {
		return err
	}

	// Why the agent stops is known only from its DaemonSet, and Helm
	// deletes the agent's RBAC right after it: follow it while running.
	life := lifecycle.NewWatcher(client, cfg.InstallNamespace, "weft-agent", log.With("component", "lifecycle"))

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return life.Run(ctx) })
	g.Go(func() error { return a.Run(ctx) })
	// Connections the datapath gave up on (assignment drops, redirect
	// errors) go to the flow ring as drop flows.
	g.Go(func() error { return dp.RunEvents(ctx, fs, log.With("component", "datapath")) })
	g.Go(func() error {
		l, err := flows.ListenUnix(FlowsExportSocket(cfg.SocketDir))
		if err != nil {
			return err
		}
		return fs.ServeExport(ctx, l)
	})
	g.Go(func() error {
		l, err := flows.ListenUnix(HubbleSocket(cfg.SocketDir))
		if err != nil {
			return err
		}
		return fs.ServeObserver(ctx, l)
	})
	if cfg.Flows.Addr != "" {
		g.Go(func() error { return serveFlowsTLS(ctx, g, cfg, client, fs, log) })
	}
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
	err = g.Wait()
	if life.Uninstalling(context.Background(), uninstallCheckTimeout) {
		log.Info("weft is being uninstalled: removing this node's eBPF programs, links and pins", "pinRoot", cfg.PinRoot)
		closeDP()
		if cerr := datapath.Cleanup(cfg.PinRoot, cfg.CgroupPath); cerr != nil {
			err = errors.Join(err, fmt.Errorf("uninstall: %w", cerr))
		}
	}
	return err
}

// serveFlowsTLS serves the flow API over TLS on cfg.Flows.Addr with a new
// self-signed certificate, which it publishes on the agent's pod.
func serveFlowsTLS(ctx context.Context, g *errgroup.Group, cfg Config, client kubernetes.Interface, fs *flows.Server, log *slog.Logger) error {
	log = log.With("component", "flows-tls")
	nodeIP := cfg.Flows.NodeIP
	if nodeIP == "" && cfg.Flows.PodName != "" {
		nodeIP = podHostIP(ctx, client, cfg.InstallNamespace, cfg.Flows.PodName, log)
	}
	var ips []net.IP
	if ip := net.ParseIP(nodeIP); ip != nil {
		ips = append(ips, ip)
	}
	cert, certPEM, err := flows.SelfSignedCert(cfg.NodeName, ips, time.Now())
	if err != nil {
		return err
	}
	l := listenRetrying(ctx, cfg.Flows.Addr, log)
	if l == nil {
		return nil // ctx ended
	}
	if cfg.Flows.PodName != "" {
		g.Go(func() error {
			return flows.PublishCert(ctx, client, cfg.InstallNamespace, cfg.Flows.PodName, certPEM, log)
		})
	} else {
		log.Warn("no --pod-name: the flow api certificate is not published, clients cannot pin it")
	}
	log.Info("serving the flow api over tls", "addr", l.Addr().String(), "serverName", cfg.NodeName, "ip", nodeIP)
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return fs.ServeObserverTLS(ctx, l, tc, flows.NewKubeAuthorizer(client, cfg.NodeName))
}

// listenRetrying listens on TCP addr, retrying (1 s doubling to 10 s) while
// the address is taken (a previous agent still stopping): the flow API is
// not worth stopping the agent for. It returns nil when ctx ends first.
func listenRetrying(ctx context.Context, addr string, log *slog.Logger) net.Listener {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	for delay := time.Second; ; delay = min(2*delay, 10*time.Second) {
		l, err := lc.Listen(ctx, "tcp", addr)
		if err == nil {
			return l
		}
		log.Warn("cannot listen for the flow api, retrying", "addr", addr, "err", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

// podHostIP is the hostIP of pod namespace/name, or "" when the API server
// does not tell within 30 s (the certificate then has no IP SAN).
func podHostIP(ctx context.Context, client kubernetes.Interface, namespace, name string, log *slog.Logger) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for delay := 500 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		pod, err := client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && pod.Status.HostIP != "" {
			return pod.Status.HostIP
		}
		if err == nil {
			err = errors.New("no status.hostIP yet")
		}
		select {
		case <-ctx.Done():
			log.Warn("cannot read this agent's pod for the node ip; the flow api certificate has no ip", "pod", namespace+"/"+name, "err", err)
			return ""
		case <-time.After(delay):
		}
	}
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
