// Package server wires the node proxy (weft-ztunnel) together: the mesh
// state from its source, the certificate manager, the connection proxy, the
// in-pod manager that receives pods from the agent, and the admin server
// with metrics and readiness. It holds no logic of its own beyond start-up
// order and shutdown; it must never import client-go or another weft
// component.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/weftmesh/weft/bpf/redirect"
	"github.com/weftmesh/weft/ztunnel/caclient"
	"github.com/weftmesh/weft/ztunnel/flowexport"
	"github.com/weftmesh/weft/ztunnel/identity"
	"github.com/weftmesh/weft/ztunnel/inpod"
	"github.com/weftmesh/weft/ztunnel/meshclient"
	"github.com/weftmesh/weft/ztunnel/proxy"
	"github.com/weftmesh/weft/ztunnel/state"
	"github.com/weftmesh/weft/ztunnel/telemetry"
)

// Config is weft-ztunnel's configuration (its flags).
type Config struct {
	// Socket is the agent's handoff socket.
	Socket string
	// PinRoot is the agent's bpffs pin root, holding the orig_dst map.
	PinRoot string
	// ConfigFile is the mesh state file (until the operator streams it).
	ConfigFile   string
	PollInterval time.Duration
	// CADir holds the file CA (ca.crt/ca.key or tls.crt/tls.key) that signs
	// this node's workload certificates until the operator does.
	CADir        string
	CertLifetime time.Duration
	// AdminAddr serves /metrics and /healthz/ready (Istio's :15020).
	AdminAddr string
	// Mark is the SO_MARK of the proxy's sockets in pod netns.
	Mark uint32
	// OperatorAddr, when set, is the operator's gRPC address: mesh state
	// comes from its per-node stream and certificates from its CA service,
	// instead of ConfigFile and CADir.
	OperatorAddr string
	// TokenFile is the projected ServiceAccount token (audience "weft")
	// the proxy authenticates to the operator with.
	TokenFile string
	// TrustBundleFile holds the PEM mesh roots the operator's serving
	// certificate is verified with until the stream delivers the bundle.
	TrustBundleFile string
	// Node is this node's name.
	Node string
	// DebugAddr serves Go's pprof profiles; empty = off. Keep it on
	// localhost (Istio's ztunnel admin port 15000 is localhost-only too).
	DebugAddr string
	// FlowsSocket is the agent's flow export socket (api/flows/v1); empty =
	// no flow records.
	FlowsSocket string
	// FlowsQueue bounds the flow records waiting for the agent; 0 =
	// flowexport.DefaultQueueSize.
	FlowsQueue int
}

// flushTimeout bounds how long the flow records of the connections cut by
// a shutdown may take to reach the agent.
const flushTimeout = 2 * time.Second

// Run runs the node proxy until ctx ends. The connections it cuts then are
// recorded (access log, flow records) as reset by the shutdown, and the flow
// records reach the agent before Run returns, within a short deadline.
func Run(parent context.Context, cfg Config, log *slog.Logger) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	stopCause := context.AfterFunc(parent, func() { cancel(proxy.ErrShutdown) })
	defer stopCause()

	operator := cfg.OperatorAddr != ""
	switch {
	case cfg.Socket == "":
		return errors.New("run ztunnel: the agent socket is required")
	case operator && (cfg.TokenFile == "" || cfg.TrustBundleFile == "" || cfg.Node == ""):
		return errors.New("run ztunnel: with an operator, a token file, a trust bundle file and the node name are required")
	case !operator && (cfg.ConfigFile == "" || cfg.CADir == ""):
		return errors.New("run ztunnel: without an operator, the config file and the CA directory are required")
	}
	origDst, err := openOrigDst(ctx, cfg.PinRoot, log)
	if err != nil {
		return fmt.Errorf("run ztunnel: %w", err)
	}
	if origDst == nil {
		return nil // stopped while waiting
	}
	defer origDst.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := telemetry.New(reg, log)
	if err != nil {
		return fmt.Errorf("run ztunnel: %w", err)
	}
	store := state.NewStore(log)
	var (
		signer identity.Signer
		roots  identity.RootSource
	)
	if operator {
		bundle, err := os.ReadFile(cfg.TrustBundleFile)
		if err != nil {
			return fmt.Errorf("run ztunnel: read trust bundle: %w", err)
		}
		cac, err := caclient.New(caclient.Options{Addr: cfg.OperatorAddr, TrustBundle: bundle, TokenFile: cfg.TokenFile})
		if err != nil {
			return fmt.Errorf("run ztunnel: %w", err)
		}
		defer cac.Close()
		signer, roots = cac, cac
	} else {
		fs := identity.NewFileSigner(cfg.CADir, cfg.CertLifetime)
		signer, roots = fs, fs
	}
	certs := identity.NewManager(signer, roots, identity.Options{}, log)
	err = telemetry.RegisterCertExpiry(reg, func() []telemetry.CertExpiry {
		st := certs.Status()
		out := make([]telemetry.CertExpiry, len(st))
		for i, c := range st {
			out[i] = telemetry.CertExpiry{Identity: c.ID.String(), NotAfter: c.NotAfter}
		}
		return out
	})
	if err != nil {
		return fmt.Errorf("run ztunnel: %w", err)
	}
	var exporter *flowexport.Exporter
	if cfg.FlowsSocket != "" {
		exporter, err = flowexport.New(flowexport.Config{
			Socket:       cfg.FlowsSocket,
			QueueSize:    cfg.FlowsQueue,
			FlushTimeout: flushTimeout,
			Registerer:   reg,
			Log:          log,
		})
		if err != nil {
			return fmt.Errorf("run ztunnel: %w", err)
		}
		metrics.SetFlowSink(exporter)
	}
	px, err := proxy.New(proxy.Config{
		OrigDst: func(cookie uint64, peer netip.AddrPort) (netip.AddrPort, error) { return origDst.Lookup(cookie, peer) },
	}, store, certs, metrics, log)
	if err != nil {
		return err
	}
	configInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weft_ztunnel_config_info",
		Help: "The mesh config version this node proxy serves (value 1).",
	}, []string{"version"})
	reg.MustRegister(configInfo)
	// Roots of a CA rotation arrive in the config before anything is
	// signed with them.
	cancelRoots := store.Subscribe(func(_, snap *state.Snapshot) {
		configInfo.Reset()
		configInfo.WithLabelValues(snap.Version).Set(1)
		if err := certs.SetExtraRoots([]byte(snap.TrustBundle)); err != nil {
			log.Warn("trust bundle of the mesh config not usable", "version", snap.Version, "error", err.Error())
		}
	})
	defer cancelRoots()
	pods := inpod.New(inpod.Config{Socket: cfg.Socket, Mark: cfg.Mark}, px, log)

	ln, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen admin %s: %w", cfg.AdminAddr, err)
	}
	ready := func() error {
		select {
		case <-store.Ready():
		default:
			return errors.New("no mesh config loaded yet")
		}
		if !pods.Synced() {
			return errors.New("not synced with the agent")
		}
		return nil
	}

	if exporter != nil {
		// The exporter outlives the other components: it sends the close
		// records of the connections their shutdown cuts.
		ectx, stopExport := context.WithCancel(context.WithoutCancel(ctx))
		exported := make(chan error, 1)
		go func() { exported <- exporter.Run(ectx) }()
		defer func() {
			stopExport()
			if err := <-exported; err != nil {
				log.Warn("flow export", "error", err.Error())
			}
		}()
	}

	g, gctx := errgroup.WithContext(ctx)
	if cfg.DebugAddr != "" {
		dln, err := net.Listen("tcp", cfg.DebugAddr)
		if err != nil {
			return fmt.Errorf("listen debug %s: %w", cfg.DebugAddr, err)
		}
		g.Go(func() error { return serveDebug(gctx, dln) })
	}
	g.Go(func() error { return telemetry.ServeAdmin(gctx, ln, reg, ready, log) })
	if operator {
		g.Go(func() error {
			return meshclient.Run(gctx, meshclient.Config{Addr: cfg.OperatorAddr, Node: cfg.Node, TokenFile: cfg.TokenFile, Roots: certs.Roots}, store, log)
		})
	} else {
		g.Go(func() error { return store.WatchFile(gctx, cfg.ConfigFile, cfg.PollInterval) })
	}
	g.Go(func() error { return certs.Run(gctx) })
	// Whatever stops the pods' connections — SIGTERM or a failed component
	// (errgroup cancels with its error) — cuts them by a shutdown: the
	// proxy and the pods see that cause.
	podsCtx, podsCancel := context.WithCancelCause(context.WithoutCancel(gctx))
	stopPods := context.AfterFunc(gctx, func() { podsCancel(proxy.ErrShutdown) })
	defer stopPods()
	defer podsCancel(nil)
	g.Go(func() error { return px.Run(podsCtx) })
	g.Go(func() error {
		// Serve pods only with a config: without it a meshed destination
		// would look like an unknown one and leave in plaintext.
		select {
		case <-podsCtx.Done():
			return nil
		case <-store.Ready():
		}
		return pods.Run(podsCtx)
	})
	return g.Wait()
}

// serveDebug serves pprof on ln until ctx ends.
func serveDebug(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve debug: %w", err)
	}
	return nil
}

// openOrigDst opens the agent's pinned orig_dst map, waiting for it: the
// agent (another DaemonSet) may start after the proxy and pins the map when
// it loads the datapath. It returns nil, nil if ctx ends first.
func openOrigDst(ctx context.Context, pinRoot string, log *slog.Logger) (*redirect.OrigDstReader, error) {
	delay := 100 * time.Millisecond
	for logged := false; ; {
		r, err := redirect.OpenOrigDst(pinRoot)
		if err == nil {
			return r, nil
		}
		if !logged {
			log.Info("waiting for the agent's datapath", "pinRoot", pinRoot, "error", err.Error())
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}
