package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// reviews are the TokenReview answers of the fake API server, by token.
var reviews = map[string]authnv1.TokenReviewStatus{
	"ztunnel": {Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{
		Username: "system:serviceaccount:weft-system:weft-ztunnel",
		Extra:    map[string]authnv1.ExtraValue{extraNodeName: {"node-7"}},
	}},
	"agent": {Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{
		Username: "system:serviceaccount:weft-system:weft-agent",
		Extra:    map[string]authnv1.ExtraValue{extraNodeName: {"node-3"}},
	}},
	"other-sa": {Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{
		Username: "system:serviceaccount:shop:weft-ztunnel",
		Extra:    map[string]authnv1.ExtraValue{extraNodeName: {"node-7"}},
	}},
	"not-pod-bound": {Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{
		Username: "system:serviceaccount:weft-system:weft-ztunnel",
	}},
	"other-audience": {Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"}, User: authnv1.UserInfo{
		Username: "system:serviceaccount:weft-system:weft-ztunnel",
		Extra:    map[string]authnv1.ExtraValue{extraNodeName: {"node-7"}},
	}},
	"rejected": {Authenticated: false, Error: "token expired"},
}

func fakeReviewer(tb testing.TB) (*fake.Clientset, *[]authnv1.TokenReviewSpec) {
	tb.Helper()
	client := fake.NewClientset()
	var (
		mu   sync.Mutex
		seen []authnv1.TokenReviewSpec
	)
	client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		mu.Lock()
		seen = append(seen, tr.Spec)
		mu.Unlock()
		if tr.Spec.Token == "api-down" {
			return true, nil, errors.New("connection refused")
		}
		out := tr.DeepCopy()
		out.Status = reviews[tr.Spec.Token]
		return true, out, nil
	})
	return client, &seen
}

func TestStreamAuth(t *testing.T) {
	client, seen := fakeReviewer(t)
	a := &streamAuth{client: client, audience: "weft", accepted: []string{"weft-system/weft-ztunnel", "weft-system/weft-agent"}}
	tests := []struct {
		name     string
		md       metadata.MD
		wantNode string
		wantCode codes.Code
	}{
		{name: "node proxy", md: metadata.Pairs("authorization", "Bearer ztunnel"), wantNode: "node-7"},
		{name: "agent", md: metadata.Pairs("authorization", "bearer agent"), wantNode: "node-3"},
		{name: "no token", md: metadata.MD{}, wantCode: codes.Unauthenticated},
		{name: "not bearer", md: metadata.Pairs("authorization", "Basic ztunnel"), wantCode: codes.Unauthenticated},
		{name: "two tokens", md: metadata.Pairs("authorization", "Bearer ztunnel", "authorization", "Bearer agent"), wantCode: codes.Unauthenticated},
		{name: "same name in another namespace", md: metadata.Pairs("authorization", "Bearer other-sa"), wantCode: codes.Unauthenticated},
		{name: "rejected token", md: metadata.Pairs("authorization", "Bearer rejected"), wantCode: codes.Unauthenticated},
		{name: "other audience", md: metadata.Pairs("authorization", "Bearer other-audience"), wantCode: codes.Unauthenticated},
		{name: "not bound to a node", md: metadata.Pairs("authorization", "Bearer not-pod-bound"), wantCode: codes.PermissionDenied},
		{name: "API server down", md: metadata.Pairs("authorization", "Bearer api-down"), wantCode: codes.Unavailable},
		// The node is the token's: metadata naming another changes nothing.
		{name: "node in metadata ignored", md: metadata.Pairs("authorization", "Bearer ztunnel", "node", "node-1", "x-node-name", "node-1"), wantNode: "node-7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(context.Background(), tt.md)
			node, err := a.authenticate(ctx)
			if code := status.Code(err); code != tt.wantCode || node != tt.wantNode {
				t.Errorf("authenticate = %q, %v (%v), want %q, %v", node, code, err, tt.wantNode, tt.wantCode)
			}
		})
	}
	for _, spec := range *seen {
		if !slices.Equal(spec.Audiences, []string{"weft"}) {
			t.Errorf("a review asked for audiences %v, want [weft]", spec.Audiences)
		}
	}
}

// fakeAuthority, fakeStream and fakeSets stand in for the CA, the stream
// server and the controller.
type fakeAuthority struct {
	mu        sync.Mutex
	pending   []*x509.Certificate
	activated [][]*x509.Certificate
	changed   chan struct{}
}

func (f *fakeAuthority) PendingRoots() []*x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pending)
}

func (f *fakeAuthority) Activate(roots ...*x509.Certificate) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.activated = append(f.activated, roots)
	f.pending = nil
	return true
}

func (f *fakeAuthority) Changed() <-chan struct{} { return f.changed }

type fakeStream struct {
	acked map[string]string // node → version; "" = connected, nothing acked
}

func (f *fakeStream) ConnectedNodes() []string {
	var out []string
	for n := range f.acked {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (f *fakeStream) Acked(node string) (string, bool) {
	v, ok := f.acked[node]
	return v, ok && v != ""
}

type fakeSets struct {
	compiled bool
	bundles  map[string][]byte
}

func (f *fakeSets) SystemVersion() (string, bool) { return "v", f.compiled }
func (f *fakeSets) TrustBundleAt(v string) ([]byte, bool) {
	b, ok := f.bundles[v]
	return b, ok
}

func testRoot(tb testing.TB, name string) (*x509.Certificate, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestRotationActivatesOnlyWhatEveryNodeTrusts(t *testing.T) {
	_, oldPEM := testRoot(t, "old")
	newRoot, newPEM := testRoot(t, "new")
	both := append(append([]byte{}, oldPEM...), newPEM...)
	bundles := map[string][]byte{"v-old": oldPEM, "v-both": both}
	tests := []struct {
		name         string
		compiled     bool
		acked        map[string]string
		wantActivate bool
	}{
		{name: "every node acked the new bundle", compiled: true, acked: map[string]string{"n1": "v-both", "n2": "v-both"}, wantActivate: true},
		{name: "one node holds the old bundle", compiled: true, acked: map[string]string{"n1": "v-both", "n2": "v-old"}},
		{name: "one node acked nothing yet", compiled: true, acked: map[string]string{"n1": "v-both", "n2": ""}},
		{name: "one node acked an unknown version", compiled: true, acked: map[string]string{"n1": "v-both", "n2": "v-gone"}},
		{name: "nothing compiled yet", compiled: false, acked: map[string]string{}},
		{name: "no node connected", compiled: true, acked: map[string]string{}, wantActivate: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &fakeAuthority{pending: []*x509.Certificate{newRoot}, changed: make(chan struct{})}
			r := newRotation(a, &fakeStream{acked: tt.acked}, &fakeSets{compiled: tt.compiled, bundles: bundles}, 0, slog.New(slog.DiscardHandler))
			r.check()
			got := len(a.activated) == 1 && len(a.activated[0]) == 1 && a.activated[0][0].Equal(newRoot)
			if got != tt.wantActivate || len(a.activated) > 1 {
				t.Errorf("activated %v, want the new root activated: %v", a.activated, tt.wantActivate)
			}
		})
	}
}

func TestRotationWaitsForReconnects(t *testing.T) {
	newRoot, _ := testRoot(t, "new")
	a := &fakeAuthority{pending: []*x509.Certificate{newRoot}, changed: make(chan struct{})}
	r := newRotation(a, &fakeStream{}, &fakeSets{compiled: true}, time.Hour, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r.acked()
	if err := r.run(ctx); err != nil {
		t.Fatal(err)
	}
	if len(a.activated) != 0 {
		t.Errorf("activated %v within the reconnect grace, want nothing", a.activated)
	}
}

func TestReadiness(t *testing.T) {
	s := &Server{registry: prometheus.NewRegistry()}
	srv := httptest.NewServer(s.httpHandler())
	defer srv.Close()
	get := func(path string) int {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the CA loaded = %d, want 503", code)
	}
	var compiled atomic.Bool
	ready := compiled.Load
	s.ready.Store(&ready)
	if code := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the first compile = %d, want 503", code)
	}
	compiled.Store(true)
	if code := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz once compiled = %d, want 200", code)
	}
}
