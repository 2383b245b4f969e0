package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	cav1 "github.com/weftmesh/weft/api/ca/v1"
	"github.com/weftmesh/weft/internal/spiffe"
)

// reviews is a fake TokenReview API: token → status. It counts calls.
type reviews struct {
	byToken map[string]authnv1.TokenReviewStatus
	calls   atomic.Int64
	fail    atomic.Bool
}

func (r *reviews) react(a k8stesting.Action) (bool, runtime.Object, error) {
	r.calls.Add(1)
	if r.fail.Load() {
		return true, nil, errors.New("connection refused")
	}
	tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
	st, ok := r.byToken[tr.Spec.Token]
	if !ok {
		st = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
	}
	tr.Status = st
	return true, tr, nil
}

// proxyReview is the review of a node proxy's pod-bound token on node.
func proxyReview(node string) authnv1.TokenReviewStatus {
	return saReview("weft-system", "weft-ztunnel", node)
}

func saReview(ns, sa, node string) authnv1.TokenReviewStatus {
	st := authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{"weft"},
		User:          authnv1.UserInfo{Username: "system:serviceaccount:" + ns + ":" + sa, Extra: map[string]authnv1.ExtraValue{}},
	}
	if node != "" {
		st.User.Extra[extraNodeName] = authnv1.ExtraValue{node}
		st.User.Extra[extraPodName] = authnv1.ExtraValue{sa + "-" + node}
	}
	return st
}

func pod(ns, name, sa, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

type testServer struct {
	*Server
	client  *fake.Clientset
	reviews *reviews
	reg     *prometheus.Registry
	root    *testCA
}

// newTestServer starts a Server's pod cache (not its listener) over a fake
// clientset holding objs, with tokens reviewed as given.
func newTestServer(tb testing.TB, tokens map[string]authnv1.TokenReviewStatus, ttl time.Duration, objs ...runtime.Object) *testServer {
	tb.Helper()
	root := newRoot(tb, "mesh root", "cluster.local")
	client := fake.NewClientset(append(objs, secret(weftData(root)))...)
	rv := &reviews{byToken: tokens}
	client.PrependReactor("create", "tokenreviews", rv.react)
	a := newTestAuthority(tb, client, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { lis.Close() })
	reg := prometheus.NewRegistry()
	s, err := NewServer(ServerOptions{
		Authority: a, Client: client, Listener: lis, Namespace: testNamespace,
		TokenCacheTTL: ttl, Registerer: reg, Log: testLog(tb),
	})
	if err != nil {
		tb.Fatalf("NewServer() error = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pods.RunWithContext(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	if !cache.WaitForCacheSync(ctx.Done(), s.pods.HasSynced) {
		tb.Fatal("pod cache did not sync")
	}
	return &testServer{Server: s, client: client, reviews: rv, reg: reg, root: root}
}

// callCtx is an incoming call context carrying metadata kv pairs.
func callCtx(kv ...string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
}

func bearer(token string) context.Context { return callCtx("authorization", "Bearer "+token) }

func TestSign(t *testing.T) {
	tokens := map[string]authnv1.TokenReviewStatus{
		"proxy-node0":   proxyReview("node0"),
		"proxy-node1":   proxyReview("node1"),
		"proxy-unbound": proxyReview(""),
		"intruder":      saReview("shop", "cart", "node0"),
		"kube-audience": func() authnv1.TokenReviewStatus {
			st := proxyReview("node0")
			st.Audiences = []string{"https://kubernetes.default.svc"}
			return st
		}(),
	}
	s := newTestServer(t, tokens, -1,
		pod("shop", "cart-0", "cart", "node0", corev1.PodRunning),
		pod("shop", "web-0", "web", "node1", corev1.PodRunning),
		pod("shop", "job-0", "job", "node0", corev1.PodSucceeded),
		pod("shop", "pending-0", "pending", "", corev1.PodPending),
		pod("shop", "dflt-0", "", "node0", corev1.PodRunning),
	)
	cart := spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}
	web := spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"}
	req := func(id spiffe.ID) *cav1.SignRequest {
		return &cav1.SignRequest{CsrPem: newCSR(t, id), Namespace: id.Namespace, ServiceAccount: id.ServiceAccount}
	}
	tests := []struct {
		name    string
		ctx     context.Context
		req     *cav1.SignRequest
		want    codes.Code
		wantMsg string
	}{
		{name: "pod of the identity on the caller's node", ctx: bearer("proxy-node0"), req: req(cart), want: codes.OK},
		{name: "the other node's pod from that node", ctx: bearer("proxy-node1"), req: req(web), want: codes.OK},
		{name: "pod without serviceAccountName is default's", ctx: bearer("proxy-node0"), req: req(spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "default"}), want: codes.OK},
		{name: "no authorization", ctx: context.Background(), req: req(cart), want: codes.Unauthenticated, wantMsg: "authorization"},
		{name: "not a bearer token", ctx: callCtx("authorization", "Basic cHJveHk="), req: req(cart), want: codes.Unauthenticated, wantMsg: "Bearer"},
		{name: "two tokens", ctx: callCtx("authorization", "Bearer proxy-node0", "authorization", "Bearer proxy-node1"), req: req(cart), want: codes.Unauthenticated},
		{name: "rejected token", ctx: bearer("forged"), req: req(cart), want: codes.Unauthenticated, wantMsg: "invalid bearer token"},
		{name: "another ServiceAccount", ctx: bearer("intruder"), req: req(cart), want: codes.Unauthenticated, wantMsg: "not the node proxy's ServiceAccount weft-system/weft-ztunnel"},
		{name: "wrong audience", ctx: bearer("kube-audience"), req: req(cart), want: codes.Unauthenticated, wantMsg: "audience"},
		{name: "token bound to no node", ctx: bearer("proxy-unbound"), req: req(cart), want: codes.PermissionDenied, wantMsg: "not bound to a pod on a node"},
		{name: "pod on another node", ctx: bearer("proxy-node0"), req: req(web), want: codes.PermissionDenied, wantMsg: "bound to node node0"},
		{name: "node name in metadata changes nothing", ctx: callCtx("authorization", "Bearer proxy-node0", "node-name", "node1", extraNodeName, "node1", "x-weft-node", "node1"), req: req(web), want: codes.PermissionDenied},
		{name: "finished pod", ctx: bearer("proxy-node0"), req: req(spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "job"}), want: codes.PermissionDenied},
		{name: "unscheduled pod", ctx: bearer("proxy-node0"), req: req(spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "pending"}), want: codes.PermissionDenied},
		{name: "invalid namespace", ctx: bearer("proxy-node0"), req: &cav1.SignRequest{CsrPem: newCSR(t, cart), Namespace: "Shop", ServiceAccount: "cart"}, want: codes.InvalidArgument, wantMsg: "namespace"},
		{name: "malformed CSR", ctx: bearer("proxy-node0"), req: &cav1.SignRequest{CsrPem: []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), Namespace: "shop", ServiceAccount: "cart"}, want: codes.InvalidArgument, wantMsg: "invalid CSR"},
		{name: "CSR for another identity", ctx: bearer("proxy-node0"), req: &cav1.SignRequest{CsrPem: newCSR(t, web), Namespace: "shop", ServiceAccount: "cart"}, want: codes.InvalidArgument, wantMsg: "asks for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Sign(tt.ctx, tt.req)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("Sign() = %v, want code %v", err, tt.want)
			}
			if err != nil {
				if !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
					t.Errorf("Sign() message = %q, want it to contain %q", status.Convert(err).Message(), tt.wantMsg)
				}
				return
			}
			leaf := verifyChain(t, resp.CertificateChainPem, parsePEMCerts(t, resp.TrustBundlePem), x509.ExtKeyUsageClientAuth, "", time.Time{})
			got, err := spiffe.FromCertificate(leaf)
			if err != nil {
				t.Fatal(err)
			}
			if want := "spiffe://cluster.local/ns/shop/sa/" + tt.req.ServiceAccount; got.String() != want {
				t.Errorf("leaf identity = %s, want %s", got, want)
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life < DefaultCertLifetime || life > DefaultCertLifetime+2*time.Minute {
				t.Errorf("leaf lifetime = %v, want about %v", life, DefaultCertLifetime)
			}
			if !sameCerts(parsePEMCerts(t, resp.TrustBundlePem), []*x509.Certificate{s.root.cert}) {
				t.Errorf("trust bundle = %v, want [mesh root]", subjects(parsePEMCerts(t, resp.TrustBundlePem)))
			}
		})
	}

	counts := map[string]int{}
	for _, tt := range tests {
		counts[resultOf(status.Error(tt.want, ""))]++
	}
	got := signCounts(t, s.reg)
	if len(got) != 6 {
		t.Errorf("series of weft_ca_sign_requests_total = %v, want all 6 results", got)
	}
	for result, want := range counts {
		if got[result] != want {
			t.Errorf("weft_ca_sign_requests_total{result=%q} = %v, want %d", result, got[result], want)
		}
	}

	t.Run("pod deleted: denied", func(t *testing.T) {
		if _, err := s.Sign(bearer("proxy-node1"), req(web)); err != nil {
			t.Fatalf("before delete: Sign() = %v", err)
		}
		if err := s.client.CoreV1().Pods("shop").Delete(context.Background(), "web-0", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, func() (bool, string) {
			_, err := s.Sign(bearer("proxy-node1"), req(web))
			return status.Code(err) == codes.PermissionDenied, fmt.Sprintf("after delete: Sign() = %v, want PermissionDenied", err)
		})
	})
	t.Run("API server unreachable: unavailable", func(t *testing.T) {
		s.reviews.fail.Store(true)
		defer s.reviews.fail.Store(false)
		if _, err := s.Sign(bearer("proxy-node0"), req(cart)); status.Code(err) != codes.Unavailable {
			t.Errorf("Sign() = %v, want Unavailable", err)
		}
	})
}

func TestTokenReviewCache(t *testing.T) {
	start := time.Now()
	jwt := func(exp time.Time) string {
		payload := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"exp":%d}`, exp.Unix()))
		return "e30." + payload + ".sig"
	}
	soon := jwt(start.Add(3 * time.Second))
	tokens := map[string]authnv1.TokenReviewStatus{"proxy": proxyReview("node0"), soon: proxyReview("node0")}
	tests := []struct {
		name      string
		ttl       time.Duration
		token     string
		advance   time.Duration // between the two calls
		wantCalls int64
	}{
		{name: "reused within the TTL", ttl: 10 * time.Second, token: "proxy", advance: 9 * time.Second, wantCalls: 1},
		{name: "reviewed again after the TTL", ttl: 10 * time.Second, token: "proxy", advance: 10 * time.Second, wantCalls: 2},
		{name: "reused within the token's life", ttl: 10 * time.Second, token: soon, advance: 2 * time.Second, wantCalls: 1},
		{name: "never beyond the token's expiry", ttl: 10 * time.Second, token: soon, advance: 4 * time.Second, wantCalls: 2},
		{name: "rejections are not cached", ttl: 10 * time.Second, token: "forged", wantCalls: 2},
		{name: "cache disabled", ttl: -1, token: "proxy", wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: start}
			rv := &reviews{byToken: tokens}
			client := fake.NewClientset()
			client.PrependReactor("create", "tokenreviews", rv.react)
			a := &authenticator{client: client, audience: "weft", nodeProxy: DefaultNodeProxy, ttl: tt.ttl, now: clock.Now}
			_, err1 := a.authenticate(bearer(tt.token))
			clock.Advance(tt.advance)
			_, err2 := a.authenticate(bearer(tt.token))
			if status.Code(err1) != status.Code(err2) {
				t.Errorf("first call = %v, second = %v: the cache changed the answer", err1, err2)
			}
			if got := rv.calls.Load(); got != tt.wantCalls {
				t.Errorf("TokenReviews = %d, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestServingCert(t *testing.T) {
	clock := newFakeClock()
	r1, r2 := newRoot(t, "root 1", ""), newRoot(t, "root 2", "")
	a := newTestAuthority(t, fake.NewClientset(secret(weftData(r1))), clock)
	names := []string{"weft-operator.weft-system.svc", "weft-operator.weft-system.svc.cluster.local"}
	s := &servingCert{authority: a, dnsNames: names, lifetime: 24 * time.Hour, log: testLog(t), now: clock.Now}

	get := func(t *testing.T) *x509.Certificate {
		t.Helper()
		c, err := s.GetCertificate(nil)
		if err != nil {
			t.Fatalf("GetCertificate() error = %v", err)
		}
		var chainPEM []byte
		for _, der := range c.Certificate {
			chainPEM = append(chainPEM, encodeCerts([]*x509.Certificate{mustParse(t, der)})...)
		}
		for _, n := range names {
			verifyChain(t, chainPEM, a.TrustBundle(), x509.ExtKeyUsageServerAuth, n, clock.Now())
		}
		return c.Leaf
	}
	first := get(t)
	if again := get(t); !again.Equal(first) {
		t.Error("a second handshake got a new certificate before half its lifetime")
	}
	clock.Advance(12*time.Hour + 2*time.Minute)
	renewed := get(t)
	if renewed.Equal(first) {
		t.Error("past half its lifetime the certificate was not renewed")
	}
	if err := a.Update(secret(weftData(r2))); err != nil {
		t.Fatal(err)
	}
	if !get(t).Equal(renewed) {
		t.Error("a pending root changed the serving certificate")
	}
	a.Activate(r2.cert)
	switched := get(t)
	if err := switched.CheckSignatureFrom(r2.cert); err != nil {
		t.Errorf("after the switch the serving certificate is not signed by root 2: %v", err)
	}
}

// signCounts gathers weft_ca_sign_requests_total from reg, by result.
func signCounts(tb testing.TB, reg prometheus.Gatherer) map[string]int {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather metrics: %v", err)
	}
	out := map[string]int{}
	for _, f := range families {
		if f.GetName() != "weft_ca_sign_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}

// TestRun: with a Listener the server serves TLS with its own certificate;
// without one, Run only keeps the pod cache and returns when ctx ends.
func TestRun(t *testing.T) {
	s := newTestServer(t, map[string]authnv1.TokenReviewStatus{"proxy": proxyReview("node0")}, 0,
		pod("shop", "cart-0", "cart", "node0", corev1.PodRunning))
	// newTestServer runs the pod cache already.
	s.ownPods = false
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(s.root.cert)
	conn, err := grpc.NewClient("passthrough:///"+s.listener.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "weft-operator.weft-system.svc.cluster.local",
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callCtx, callCancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer proxy"), 10*time.Second)
	defer callCancel()
	resp, err := cav1.NewCertificatesClient(conn).Sign(callCtx, &cav1.SignRequest{CsrPem: newCSR(t, testID), Namespace: "shop", ServiceAccount: "cart"})
	if err != nil {
		t.Fatalf("Sign() over TLS = %v", err)
	}
	verifyChain(t, resp.CertificateChainPem, []*x509.Certificate{s.root.cert}, x509.ExtKeyUsageClientAuth, "", time.Time{})

	t.Run("without a listener", func(t *testing.T) {
		bare, err := NewServer(ServerOptions{Authority: s.authority, Client: s.client, Namespace: testNamespace})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- bare.Run(ctx) }()
		waitFor(t, 10*time.Second, func() (bool, string) { return bare.pods.HasSynced(), "own pod cache not synced" })
		if _, err := bare.GetCertificate(nil); err != nil {
			t.Errorf("GetCertificate() error = %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
}
