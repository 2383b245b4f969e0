package ca

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	cav1 "github.com/weftmesh/weft/api/ca/v1"
	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

// Defaults of ServerOptions.
const (
	DefaultNodeProxy     = "weft-system/weft-ztunnel"
	DefaultAudience      = "weft"
	DefaultServiceName   = "weft-operator"
	DefaultTokenCacheTTL = 10 * time.Second
)

// Results of Sign, the values of the result label of
// weft_ca_sign_requests_total.
const (
	resultSigned           = "signed"
	resultUnauthenticated  = "unauthenticated"
	resultPermissionDenied = "permission_denied"
	resultInvalidArgument  = "invalid_argument"
	resultUnavailable      = "unavailable"
	resultError            = "error"
)

// podIndex indexes live pods by node and ServiceAccount (podKey).
const podIndex = "weft.io/node-serviceaccount"

// maxRequestSize bounds a request: a CSR is well under 4 KiB.
const maxRequestSize = 64 << 10

// stopGrace is how long Run lets calls in flight finish once ctx ends.
const stopGrace = 5 * time.Second

// ServerOptions configure a Server.
type ServerOptions struct {
	// Authority signs. Required.
	Authority *Authority
	// Client reviews tokens and, unless Pods is set, watches pods.
	// Required. Each uncached call costs one TokenReview: client-go's
	// default rate limit (5/s) would cap signing there, so give it room.
	Client kubernetes.Interface
	// Listener, if set, is where Run serves the service alone; Run closes
	// it. Without it the caller registers the Server on its own
	// grpc.Server (it is a cav1.CertificatesServer) with a TLS config whose
	// GetCertificate is the Server's, e.g. to share a port with the config
	// stream.
	Listener net.Listener
	// Namespace is the operator's, for the serving certificate's DNS names
	// <ServiceName>.<Namespace>.svc and .svc.cluster.local. Required.
	Namespace string
	// ServiceName is the operator's Service; default DefaultServiceName.
	ServiceName string
	// NodeProxy is the node proxy's ServiceAccount, "namespace/name": the
	// only one whose tokens are accepted. Default DefaultNodeProxy.
	NodeProxy string
	// Audience the tokens must be for; default DefaultAudience.
	Audience string
	// CertLifetime of workload certificates and of the serving
	// certificate; default DefaultCertLifetime.
	CertLifetime time.Duration
	// TokenCacheTTL is how long a positive token review is reused (never
	// beyond the token's expiry). Zero means DefaultTokenCacheTTL; negative
	// disables the cache, so every call costs a TokenReview.
	TokenCacheTTL time.Duration
	// Pods, if set, is a shared pod informer the caller starts after
	// NewServer (which adds an index to it); else the server runs its own,
	// holding only scheduled, unfinished pods, trimmed to what it reads.
	Pods cache.SharedIndexInformer
	// Registerer receives the server's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Log defaults to discarding.
	Log *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Server is the CSR service (cav1.Certificates): it signs a workload
// identity for a node proxy only if a pod with that ServiceAccount runs on
// the proxy's node, the node being the one the proxy's pod-bound token names
// (ARCHITECTURE.md §4). It is safe for concurrent use.
type Server struct {
	cav1.UnimplementedCertificatesServer

	authority *Authority
	auth      *authenticator
	pods      cache.SharedIndexInformer
	ownPods   bool
	lifetime  time.Duration
	listener  net.Listener
	grpc      *grpc.Server
	serving   *servingCert
	requests  *prometheus.CounterVec
	log       *slog.Logger
	now       func() time.Time
}

// NewServer creates a Server; Run serves it.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Authority == nil || opts.Client == nil || opts.Namespace == "" {
		return nil, errors.New("create CA server: an authority, a client and the namespace are required")
	}
	nodeProxy, err := parseServiceAccount(cmp.Or(opts.NodeProxy, DefaultNodeProxy))
	if err != nil {
		return nil, fmt.Errorf("create CA server: node proxy: %w", err)
	}
	lifetime := cmp.Or(opts.CertLifetime, DefaultCertLifetime)
	if lifetime < 0 {
		return nil, fmt.Errorf("create CA server: certificate lifetime %v is negative", lifetime)
	}
	ttl := cmp.Or(opts.TokenCacheTTL, DefaultTokenCacheTTL)
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "ca-server")
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	s := &Server{
		authority: opts.Authority,
		auth: &authenticator{
			client: opts.Client, audience: cmp.Or(opts.Audience, DefaultAudience),
			nodeProxy: nodeProxy, ttl: ttl, now: now,
		},
		pods:     opts.Pods,
		lifetime: lifetime,
		listener: opts.Listener,
		log:      log,
		now:      now,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_ca_sign_requests_total",
			Help: "CSRs the mesh CA answered, by result: signed, unauthenticated, permission_denied (no pod of the identity on the caller's node), invalid_argument, unavailable, error.",
		}, []string{"result"}),
	}
	for _, r := range []string{resultSigned, resultUnauthenticated, resultPermissionDenied, resultInvalidArgument, resultUnavailable, resultError} {
		s.requests.WithLabelValues(r)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.requests); err != nil {
			return nil, fmt.Errorf("register CA metrics: %w", err)
		}
	}
	if s.pods == nil {
		s.pods, s.ownPods = newPodInformer(opts.Client), true
	}
	if err := s.pods.AddIndexers(cache.Indexers{podIndex: indexPod}); err != nil {
		return nil, fmt.Errorf("index pods by node and ServiceAccount: %w", err)
	}
	svc := cmp.Or(opts.ServiceName, DefaultServiceName)
	s.serving = &servingCert{
		authority: opts.Authority,
		dnsNames:  []string{svc + "." + opts.Namespace + ".svc", svc + "." + opts.Namespace + ".svc.cluster.local"},
		lifetime:  lifetime,
		log:       log,
		now:       now,
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: s.serving.GetCertificate,
		})),
		grpc.MaxRecvMsgSize(maxRequestSize),
	)
	cav1.RegisterCertificatesServer(s.grpc, s)
	return s, nil
}

// newPodInformer watches the pods that can hold an identity: scheduled and
// not finished (the API server filters), each trimmed to the fields the
// index reads, so the cache stays small in a large cluster.
func newPodInformer(client kubernetes.Interface) cache.SharedIndexInformer {
	selector := fields.AndSelectors(
		fields.OneTermNotEqualSelector("spec.nodeName", ""),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed)),
	).String()
	inf := coreinformers.NewFilteredPodInformer(client, metav1.NamespaceAll, 0, cache.Indexers{}, func(o *metav1.ListOptions) {
		o.FieldSelector = selector
	})
	// The informer is not running yet, so this cannot fail.
	_ = inf.SetTransform(trimPod)
	return inf
}

// trimPod keeps what indexPod and the logs read.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID,
			ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, ServiceAccountName: p.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}, nil
}

// podKey is a podIndex value.
func podKey(node, namespace, serviceAccount string) string {
	return node + "/" + namespace + "/" + serviceAccount
}

// indexPod indexes a pod bound to a node that has not terminated. A pod
// being deleted but still running keeps its identity: its connections
// drain with it.
func indexPod(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil, nil
	}
	return []string{podKey(p.Spec.NodeName, p.Namespace, cmp.Or(p.Spec.ServiceAccountName, "default"))}, nil
}

// GetCertificate returns the serving certificate, for the tls.Config of a
// gRPC server the Server is registered on: issued by the CA that signs now
// for <ServiceName>.<Namespace>.svc and .svc.cluster.local, and issued
// again at half its lifetime or once signing moved to another CA.
func (s *Server) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.serving.GetCertificate(hello)
}

// Run runs the pod cache unless it is shared and, with a Listener, serves
// there once the cache has synced, until ctx ends; calls in flight then get
// a few seconds to finish. Until the cache syncs, calls fail with
// Unavailable.
func (s *Server) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if s.ownPods {
		g.Go(func() error {
			s.pods.RunWithContext(ctx)
			return nil
		})
	}
	if s.listener == nil {
		g.Go(func() error {
			<-ctx.Done()
			return nil
		})
		return g.Wait()
	}
	g.Go(func() error {
		if !cache.WaitForCacheSync(ctx.Done(), s.pods.HasSynced) {
			s.listener.Close()
			return nil
		}
		s.log.Info("serving CSRs", "addr", s.listener.Addr().String(), "dnsNames", s.serving.dnsNames, "nodeProxy", s.auth.nodeProxy)
		if err := s.grpc.Serve(s.listener); err != nil {
			return fmt.Errorf("serve CSRs on %s: %w", s.listener.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(stopGrace):
			s.grpc.Stop()
			<-stopped
		}
		return nil
	})
	return g.Wait()
}

// Sign implements cav1.CertificatesServer.
func (s *Server) Sign(ctx context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	resp, result, err := s.sign(ctx, req)
	s.requests.WithLabelValues(result).Inc()
	return resp, err
}

func (s *Server) sign(ctx context.Context, req *cav1.SignRequest) (*cav1.SignResponse, string, error) {
	c, err := s.auth.authenticate(ctx)
	if err != nil {
		var from string
		if p, ok := peer.FromContext(ctx); ok {
			from = p.Addr.String()
		}
		s.log.Warn("refused a CSR: caller not authenticated", "peer", from, "err", status.Convert(err).Message())
		return nil, resultOf(err), err
	}
	log := s.log.With("node", c.node, "proxyPod", c.pod)
	id, err := spiffe.NewID(s.authority.TrustDomain(), req.GetNamespace(), req.GetServiceAccount())
	if err != nil {
		log.Warn("refused a CSR: invalid identity", "namespace", req.GetNamespace(), "serviceAccount", req.GetServiceAccount(), "err", err)
		return nil, resultInvalidArgument, status.Errorf(codes.InvalidArgument, "requested identity: %v", err)
	}
	log = log.With("identity", id.String())
	if !s.pods.HasSynced() {
		return nil, resultUnavailable, status.Error(codes.Unavailable, "the operator's pod cache has not synced yet")
	}
	pods, err := s.pods.GetIndexer().ByIndex(podIndex, podKey(c.node, id.Namespace, id.ServiceAccount))
	if err != nil {
		return nil, resultError, status.Errorf(codes.Internal, "look up pods: %v", err)
	}
	if len(pods) == 0 {
		log.Warn("refused a CSR: no pod of this ServiceAccount runs on the caller's node")
		return nil, resultPermissionDenied, status.Errorf(codes.PermissionDenied,
			"no running pod with ServiceAccount %s/%s is bound to node %s: a node proxy may only request the identities of its own node's pods",
			id.Namespace, id.ServiceAccount, c.node)
	}
	// One snapshot: the bundle always holds the roots of the signer used.
	v := s.authority.view.Load()
	chain, err := v.signer.ca.SignCSR(req.GetCsrPem(), id, s.lifetime, s.now())
	if errors.Is(err, pki.ErrInvalidCSR) {
		log.Warn("refused a CSR: invalid CSR", "err", err)
		return nil, resultInvalidArgument, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if err != nil {
		log.Error("sign a CSR", "err", err)
		return nil, resultError, status.Errorf(codes.Internal, "%v", err)
	}
	log.Debug("signed a CSR")
	return &cav1.SignResponse{CertificateChainPem: chain, TrustBundlePem: v.bundlePEM}, resultSigned, nil
}

// resultOf maps a status error to its result label.
func resultOf(err error) string {
	switch status.Code(err) {
	case codes.OK:
		return resultSigned
	case codes.Unauthenticated:
		return resultUnauthenticated
	case codes.PermissionDenied:
		return resultPermissionDenied
	case codes.InvalidArgument:
		return resultInvalidArgument
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
		return resultUnavailable
	default:
		return resultError
	}
}
