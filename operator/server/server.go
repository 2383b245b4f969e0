package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	cav1 "github.com/weftmesh/weft/api/ca/v1"
	"github.com/weftmesh/weft/internal/kubeconfig"
	"github.com/weftmesh/weft/internal/meshstream"
	"github.com/weftmesh/weft/operator/ca"
	"github.com/weftmesh/weft/operator/controller"
)

// Defaults of Config.
const (
	DefaultGRPCAddr    = ":15012"
	DefaultMetricsAddr = ":15014"
	// DefaultAgent is the agent's ServiceAccount name, in the install
	// namespace; the node proxy's is ca.DefaultNodeProxy's name.
	DefaultAgent = "weft-agent"
	// DefaultNodeProxy is the node proxy's ServiceAccount name, in the
	// install namespace.
	DefaultNodeProxy = "weft-ztunnel"
	// DefaultRotationGrace is how long after start nodes have to reconnect
	// before a CA rotation may complete.
	DefaultRotationGrace = 30 * time.Second
)

// Limits of the gRPC server, shared by the CSR service and the config
// stream.
const (
	// maxRecvMsgSize covers a reconnecting node's hello, which names every
	// resource it holds (about 70 bytes each).
	maxRecvMsgSize = 16 << 20
	// keepaliveTime is when the server pings an idle connection, so that a
	// node that vanished frees its streams.
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
	// clientPingMin is the most often a client may ping.
	clientPingMin = 10 * time.Second
	// stopGrace is how long in-flight calls get once Run's context ends;
	// config streams never end by themselves, so they are then cut.
	stopGrace = 2 * time.Second
	// clientQPS and clientBurst bound the operator's API requests: status
	// writes and token reviews, never lists beyond the informers'.
	clientQPS   = 50
	clientBurst = 100
)

// Config configures the operator.
type Config struct {
	// Kubeconfig is a kubeconfig file; "" means in-cluster. Ignored when
	// RestConfig is set.
	Kubeconfig string
	// RestConfig, if set, is the API server's client config.
	RestConfig *rest.Config
	// Namespace is the install namespace (the weft-ca Secret, the
	// ServiceAccounts). Required.
	Namespace string
	// CASecret is the mesh CA's Secret in Namespace; default
	// ca.DefaultSecretName.
	CASecret string
	// GRPCAddr serves the CSR service and the config stream over TLS;
	// default DefaultGRPCAddr.
	GRPCAddr string
	// MetricsAddr serves /metrics, /healthz and /readyz; default
	// DefaultMetricsAddr.
	MetricsAddr string
	// DebugAddr serves Go's pprof profiles; "" means off. Keep it on
	// localhost: profiles show the process's memory.
	DebugAddr string
	// TrustDomain of the mesh; "" means cluster.local.
	TrustDomain string
	// PolicyMode is "permissive" (default) or "strict".
	PolicyMode string
	// CertLifetime of workload certificates; default 24 h.
	CertLifetime time.Duration
	// ClusterDomain of Service hostnames; "" means cluster.local.
	ClusterDomain string
	// ExcludeNamespaces are never meshed (the agent's list); the install
	// namespace and kube-system always are excluded.
	ExcludeNamespaces []string
	// NodeProxy and Agent are the "namespace/name" ServiceAccounts whose
	// pod-bound tokens may open config streams (and, the node proxy's only,
	// request certificates); defaults DefaultNodeProxy and DefaultAgent in
	// Namespace.
	NodeProxy, Agent string
	// ServiceName is the operator's Service, named in the serving
	// certificate; default ca.DefaultServiceName.
	ServiceName string
	// RotationGrace: see DefaultRotationGrace.
	RotationGrace time.Duration
}

// Server is weft-operator. Create it with New and run it with Run, once.
// It is safe for concurrent use.
type Server struct {
	cfg        Config
	log        *slog.Logger
	kube       kubernetes.Interface
	dyn        dynamic.Interface
	grpcLis    net.Listener
	metricsLis net.Listener
	debugLis   net.Listener // nil: no pprof
	registry   *prometheus.Registry
	ready      atomic.Pointer[func() bool]
}

// New checks cfg, creates the API clients and binds both ports; Run does
// the rest.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.Namespace == "" {
		return nil, errors.New("create operator: the install namespace is required")
	}
	cfg.GRPCAddr = cmp.Or(cfg.GRPCAddr, DefaultGRPCAddr)
	cfg.MetricsAddr = cmp.Or(cfg.MetricsAddr, DefaultMetricsAddr)
	cfg.NodeProxy = cmp.Or(cfg.NodeProxy, cfg.Namespace+"/"+DefaultNodeProxy)
	cfg.Agent = cmp.Or(cfg.Agent, cfg.Namespace+"/"+DefaultAgent)
	cfg.ServiceName = cmp.Or(cfg.ServiceName, ca.DefaultServiceName)
	cfg.RotationGrace = cmp.Or(cfg.RotationGrace, DefaultRotationGrace)
	cfg.CertLifetime = cmp.Or(cfg.CertLifetime, ca.DefaultCertLifetime)
	for _, sa := range []string{cfg.NodeProxy, cfg.Agent} {
		if err := checkServiceAccount(sa); err != nil {
			return nil, fmt.Errorf("create operator: %w", err)
		}
	}
	if !slices.Contains(cfg.ExcludeNamespaces, cfg.Namespace) {
		cfg.ExcludeNamespaces = append(slices.Clone(cfg.ExcludeNamespaces), cfg.Namespace)
	}
	rc := cfg.RestConfig
	if rc == nil {
		var err error
		if rc, err = kubeconfig.Load(cfg.Kubeconfig); err != nil {
			return nil, err
		}
	}
	rc = rest.CopyConfig(rc)
	rc.QPS, rc.Burst = clientQPS, clientBurst
	rc.UserAgent = "weft-operator"
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create API client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create dynamic API client: %w", err)
	}
	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.GRPCAddr, err)
	}
	metricsLis, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		grpcLis.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.MetricsAddr, err)
	}
	var debugLis net.Listener
	if cfg.DebugAddr != "" {
		if debugLis, err = net.Listen("tcp", cfg.DebugAddr); err != nil {
			grpcLis.Close()
			metricsLis.Close()
			return nil, fmt.Errorf("listen on %s: %w", cfg.DebugAddr, err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Server{
		cfg: cfg, log: log.With("component", "operator"), kube: kube, dyn: dyn,
		grpcLis: grpcLis, metricsLis: metricsLis, debugLis: debugLis, registry: reg,
	}, nil
}

// GRPCAddr is the bound address of the gRPC port.
func (s *Server) GRPCAddr() net.Addr { return s.grpcLis.Addr() }

// MetricsAddr is the bound address of the HTTP port.
func (s *Server) MetricsAddr() net.Addr { return s.metricsLis.Addr() }

// Run loads (or creates) the mesh CA, then serves until ctx ends. It
// returns nil once ctx ends, or the first component's error.
func (s *Server) Run(ctx context.Context) error {
	defer s.grpcLis.Close()
	defer s.metricsLis.Close()
	g, ctx := errgroup.WithContext(ctx)
	// Health answers from the start; readiness once the CA is loaded and
	// the first set compiled.
	httpSrv := &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
	g.Go(func() error {
		if err := httpSrv.Serve(s.metricsLis); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve metrics on %s: %w", s.metricsLis.Addr(), err)
		}
		return nil
	})
	var debugSrv *http.Server
	if s.debugLis != nil {
		debugSrv = &http.Server{Handler: debugHandler(), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := debugSrv.Serve(s.debugLis); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve pprof on %s: %w", s.debugLis.Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-ctx.Done()
		shutCtx, cancel := context.WithTimeout(context.Background(), stopGrace)
		defer cancel()
		_ = httpSrv.Shutdown(shutCtx)
		if debugSrv != nil {
			_ = debugSrv.Close()
		}
		return nil
	})
	g.Go(func() error { return s.serve(ctx, g) })
	return g.Wait()
}

// serve builds the components and starts them in g.
func (s *Server) serve(ctx context.Context, g *errgroup.Group) error {
	cfg := s.cfg
	authority, err := ca.NewAuthority(ctx, ca.AuthorityOptions{
		Client: s.kube, Namespace: cfg.Namespace, SecretName: cfg.CASecret,
		TrustDomain: cfg.TrustDomain, CertLifetime: cfg.CertLifetime, Log: s.log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("load mesh CA: %w", err)
	}

	// rot is set below, before anything is served: no ACK can come
	// earlier.
	var rot *rotation
	auth := &streamAuth{client: s.kube, audience: ca.DefaultAudience, accepted: []string{cfg.NodeProxy, cfg.Agent}}
	stream, err := meshstream.NewServer(meshstream.ServerOptions{
		Authenticate: auth.authenticate,
		OnAck:        func(string, string, time.Time) { rot.acked() },
		Registerer:   s.registry,
	}, s.log)
	if err != nil {
		return err
	}
	ctrl, err := controller.New(controller.Options{
		Client: s.kube, Dynamic: s.dyn, Nodes: stream, TrustBundle: authority,
		TrustDomain: cfg.TrustDomain, PolicyMode: cfg.PolicyMode,
		ClusterDomain: cfg.ClusterDomain, ExcludeNamespaces: cfg.ExcludeNamespaces,
		Registerer: s.registry, Log: s.log,
	})
	if err != nil {
		return err
	}
	publisher, err := controller.NewTrustBundlePublisher(controller.PublisherOptions{
		Client: s.kube, TrustBundle: authority, ExcludeNamespaces: cfg.ExcludeNamespaces, Log: s.log,
	})
	if err != nil {
		return err
	}
	rot = newRotation(authority, stream, ctrl, cfg.RotationGrace, s.log.With("component", "rotation"))
	caSrv, err := ca.NewServer(ca.ServerOptions{
		Authority: authority, Client: s.kube, Namespace: cfg.Namespace, ServiceName: cfg.ServiceName,
		NodeProxy: cfg.NodeProxy, Audience: ca.DefaultAudience, CertLifetime: cfg.CertLifetime,
		// One pod cache for the controller and the CA.
		Pods:       ctrl.PodInformer(),
		Registerer: s.registry,
		Log:        s.log,
	})
	if err != nil {
		return err
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: caSrv.GetCertificate,
		})),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.ChainStreamInterceptor(newResyncBudget(defaultResyncBudget).interceptor),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: clientPingMin, PermitWithoutStream: true}),
	)
	cav1.RegisterCertificatesServer(gs, caSrv)
	stream.Register(gs)

	ready := func() bool { _, ok := ctrl.SystemVersion(); return ok }
	s.ready.Store(&ready)
	s.log.Info("serving", "grpc", s.grpcLis.Addr().String(), "metrics", s.metricsLis.Addr().String(),
		"trustDomain", authority.TrustDomain(), "policyMode", cmp.Or(cfg.PolicyMode, "permissive"),
		"streamServiceAccounts", []string{cfg.NodeProxy, cfg.Agent})

	g.Go(func() error { return authority.Run(ctx) })
	g.Go(func() error { return ctrl.Run(ctx) })
	g.Go(func() error { return publisher.Run(ctx) })
	g.Go(func() error { return caSrv.Run(ctx) })
	g.Go(func() error { return rot.run(ctx) })
	g.Go(func() error {
		if err := gs.Serve(s.grpcLis); err != nil {
			return fmt.Errorf("serve gRPC on %s: %w", s.grpcLis.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() {
			gs.GracefulStop()
			close(stopped)
		}()
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-stopped:
		case <-t.C:
			gs.Stop()
			<-stopped
		}
		return nil
	})
	return nil
}

// debugHandler serves Go's pprof profiles.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// httpHandler serves /metrics, /healthz (the process is up) and /readyz
// (the CA is loaded and the first set compiled: nodes that connect get a
// set at once).
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if r := s.ready.Load(); r == nil || !(*r)() {
			http.Error(w, "not ready: loading the CA or syncing caches", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
