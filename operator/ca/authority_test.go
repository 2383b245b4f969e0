package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

var testID = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}

func TestParseSecret(t *testing.T) {
	root := newRoot(t, "root", "")
	inter := newIntermediate(t, "intermediate", root)
	staged := newRoot(t, "staged", "")
	notCA := issueLeafPEM(t, root)

	tests := []struct {
		name        string
		data        map[string][]byte
		wantAnchors []*x509.Certificate
		wantRoots   []*x509.Certificate
		wantChain   int // certificates after a workload leaf
		wantErr     string
	}{
		{name: "weft format, self-signed root", data: weftData(root), wantAnchors: []*x509.Certificate{root.cert}, wantRoots: []*x509.Certificate{root.cert}, wantChain: 1},
		{name: "weft format with an intermediate and its root", data: map[string][]byte{
			pki.CACertFile: append(bytes.Clone(inter.certPEM), root.certPEM...), pki.CAKeyFile: inter.keyPEM,
		}, wantAnchors: []*x509.Certificate{root.cert}, wantRoots: []*x509.Certificate{root.cert}, wantChain: 1},
		{name: "cert-manager, intermediate under ca.crt", data: certManagerData(inter, root), wantAnchors: []*x509.Certificate{root.cert}, wantRoots: []*x509.Certificate{root.cert}, wantChain: 1},
		{name: "cert-manager, self-signed (ca.crt is tls.crt)", data: certManagerData(root, root), wantAnchors: []*x509.Certificate{root.cert}, wantRoots: []*x509.Certificate{root.cert}, wantChain: 1},
		{name: "cert-manager, ca.crt with a second root", data: map[string][]byte{
			pki.TLSCertFile: inter.certPEM, pki.TLSKeyFile: inter.keyPEM, pki.CACertFile: append(bytes.Clone(staged.certPEM), root.certPEM...),
		}, wantAnchors: []*x509.Certificate{root.cert}, wantRoots: []*x509.Certificate{root.cert, staged.cert}, wantChain: 1},
		{name: "extra roots", data: map[string][]byte{
			pki.CACertFile: root.certPEM, pki.CAKeyFile: root.keyPEM, ExtraRootsKey: staged.certPEM,
		}, wantAnchors: []*x509.Certificate{root.cert}, wantRoots: []*x509.Certificate{root.cert, staged.cert}, wantChain: 1},
		{name: "empty", data: map[string][]byte{}, wantErr: "neither tls.key nor ca.key"},
		{name: "key of another CA", data: map[string][]byte{pki.CACertFile: root.certPEM, pki.CAKeyFile: staged.keyPEM}, wantErr: "does not match"},
		{name: "extra root that is not a CA", data: map[string][]byte{
			pki.CACertFile: root.certPEM, pki.CAKeyFile: root.keyPEM, ExtraRootsKey: notCA,
		}, wantErr: "is not a CA"},
		{name: "garbage bundle", data: map[string][]byte{
			pki.TLSCertFile: inter.certPEM, pki.TLSKeyFile: inter.keyPEM, pki.CACertFile: []byte("not PEM"),
		}, wantErr: "no PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseSecret(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSecret() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseSecret() error = %v", err)
			}
			if !sameCerts(m.anchors, tt.wantAnchors) {
				t.Errorf("anchors = %v, want %v", subjects(m.anchors), subjects(tt.wantAnchors))
			}
			if !sameCerts(m.roots, tt.wantRoots) {
				t.Errorf("roots = %v, want %v", subjects(m.roots), subjects(tt.wantRoots))
			}
			chainPEM, err := m.ca.SignCSR(newCSR(t, testID), testID, time.Hour, time.Now())
			if err != nil {
				t.Fatalf("SignCSR() error = %v", err)
			}
			if got := len(parsePEMCerts(t, chainPEM)) - 1; got != tt.wantChain {
				t.Errorf("signed chain has %d certificates after the leaf, want %d", got, tt.wantChain)
			}
			verifyChain(t, chainPEM, m.anchors, x509.ExtKeyUsageClientAuth, "", time.Time{})
			serving, err := issueServing(m, []string{"weft-operator.weft-system.svc"}, time.Hour, time.Now())
			if err != nil {
				t.Fatalf("issueServing() error = %v", err)
			}
			var servingPEM []byte
			for _, der := range serving.Certificate {
				servingPEM = append(servingPEM, encodeCerts([]*x509.Certificate{mustParse(t, der)})...)
			}
			verifyChain(t, servingPEM, m.anchors, x509.ExtKeyUsageServerAuth, "weft-operator.weft-system.svc", time.Time{})
		})
	}
}

func issueLeafPEM(tb testing.TB, root *testCA) []byte {
	tb.Helper()
	m, err := parseSecret(weftData(root))
	if err != nil {
		tb.Fatal(err)
	}
	chain, err := m.ca.SignCSR(newCSR(tb, testID), testID, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return chain
}

func mustParse(tb testing.TB, der []byte) *x509.Certificate {
	tb.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func secret(data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: testNamespace}, Data: data}
}

func newTestAuthority(tb testing.TB, client *fake.Clientset, clock *fakeClock) *Authority {
	tb.Helper()
	opts := AuthorityOptions{Client: client, Namespace: testNamespace, Log: testLog(tb)}
	if clock != nil {
		opts.Now = clock.Now
	}
	a, err := NewAuthority(context.Background(), opts)
	if err != nil {
		tb.Fatalf("NewAuthority() error = %v", err)
	}
	return a
}

func TestNewAuthorityLoadsOrGenerates(t *testing.T) {
	user := newRoot(t, "user root", "")
	t.Run("absent: generated once and stored", func(t *testing.T) {
		client := fake.NewClientset()
		a := newTestAuthority(t, client, nil)
		s, err := client.CoreV1().Secrets(testNamespace).Get(context.Background(), DefaultSecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get generated secret: %v", err)
		}
		stored := parsePEMCerts(t, s.Data[pki.CACertFile])
		if len(stored) != 1 || !a.Signer().Certificate().Equal(stored[0]) {
			t.Fatalf("signer %q is not the stored root %v", a.Signer().Certificate().Subject, subjects(stored))
		}
		if got := a.Signer().TrustDomain(); got != "cluster.local" {
			t.Errorf("generated root names trust domain %q, want cluster.local", got)
		}
		again := newTestAuthority(t, client, nil)
		if !again.Signer().Certificate().Equal(stored[0]) {
			t.Errorf("second start signs with %q, want the stored root", again.Signer().Certificate().Subject)
		}
		creates := 0
		for _, act := range client.Actions() {
			if act.GetVerb() == "create" && act.GetResource().Resource == "secrets" {
				creates++
			}
		}
		if creates != 1 {
			t.Errorf("secrets created = %d, want 1", creates)
		}
	})
	t.Run("present: used as is", func(t *testing.T) {
		for name, data := range map[string]map[string][]byte{
			"weft":         weftData(user),
			"cert-manager": certManagerData(user, user),
		} {
			t.Run(name, func(t *testing.T) {
				client := fake.NewClientset(secret(data))
				a := newTestAuthority(t, client, nil)
				if !a.Signer().Certificate().Equal(user.cert) {
					t.Errorf("signer = %q, want the user's root", a.Signer().Certificate().Subject)
				}
				if !sameCerts(a.TrustBundle(), []*x509.Certificate{user.cert}) {
					t.Errorf("trust bundle = %v, want [user root]", subjects(a.TrustBundle()))
				}
				for _, act := range client.Actions() {
					if act.GetVerb() != "get" {
						t.Errorf("unexpected %s %s: a user's Secret is never written", act.GetVerb(), act.GetResource().Resource)
					}
				}
			})
		}
	})
	t.Run("present but invalid: error, never overwritten", func(t *testing.T) {
		client := fake.NewClientset(secret(map[string][]byte{pki.CACertFile: user.certPEM}))
		_, err := NewAuthority(context.Background(), AuthorityOptions{Client: client, Namespace: testNamespace})
		if err == nil || !strings.Contains(err.Error(), "neither tls.key nor ca.key") {
			t.Fatalf("NewAuthority() error = %v, want one about the missing key", err)
		}
		for _, act := range client.Actions() {
			if act.GetVerb() != "get" {
				t.Errorf("unexpected %s %s", act.GetVerb(), act.GetResource().Resource)
			}
		}
	})
	t.Run("another trust domain: refused", func(t *testing.T) {
		client := fake.NewClientset(secret(weftData(newRoot(t, "other", "other.example"))))
		_, err := NewAuthority(context.Background(), AuthorityOptions{Client: client, Namespace: testNamespace})
		if err == nil || !strings.Contains(err.Error(), `names trust domain "other.example"`) {
			t.Fatalf("NewAuthority() error = %v, want one naming the trust domain", err)
		}
	})
	t.Run("lost the create race: the winner's root", func(t *testing.T) {
		client := fake.NewClientset()
		winner := secret(weftData(user))
		client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			// Another replica creates the Secret between this one's get and create.
			if err := client.Tracker().Add(winner); err != nil {
				t.Errorf("add winner: %v", err)
			}
			return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, DefaultSecretName)
		})
		a := newTestAuthority(t, client, nil)
		if !a.Signer().Certificate().Equal(user.cert) {
			t.Errorf("signer = %q, want the winner's root", a.Signer().Certificate().Subject)
		}
	})
}

// TestRotation walks the rotation state machine: a new root is trusted
// first, signed with only once acknowledged, and the old one leaves the
// bundle a certificate lifetime later.
func TestRotation(t *testing.T) {
	clock := newFakeClock()
	r1, r2, r3 := newRoot(t, "root 1", ""), newRoot(t, "root 2", ""), newRoot(t, "root 3", "")
	client := fake.NewClientset(secret(certManagerData(r1, r1)))
	a := newTestAuthority(t, client, clock)

	type want struct {
		signer  *testCA
		bundle  []*testCA
		pending []*testCA
	}
	check := func(t *testing.T, step string, w want) {
		t.Helper()
		if got := a.Signer().Certificate(); !got.Equal(w.signer.cert) {
			t.Errorf("%s: signer = %q, want %q", step, got.Subject, w.signer.cert.Subject)
		}
		if got, wantCerts := a.TrustBundle(), certsOf(w.bundle); !sameCerts(got, wantCerts) {
			t.Errorf("%s: trust bundle = %v, want %v", step, subjects(got), subjects(wantCerts))
		}
		if got, wantCerts := a.PendingRoots(), certsOf(w.pending); !sameCerts(got, wantCerts) {
			t.Errorf("%s: pending = %v, want %v", step, subjects(got), subjects(wantCerts))
		}
		if got := parsePEMCerts(t, a.TrustBundlePEM()); !sameCerts(got, a.TrustBundle()) {
			t.Errorf("%s: TrustBundlePEM = %v, TrustBundle = %v", step, subjects(got), subjects(a.TrustBundle()))
		}
		// Whatever signs must verify with the bundle nodes hold.
		chain, err := a.Signer().SignCSR(newCSR(t, testID), testID, time.Hour, clock.Now())
		if err != nil {
			t.Fatalf("%s: SignCSR() error = %v", step, err)
		}
		verifyChain(t, chain, a.TrustBundle(), x509.ExtKeyUsageClientAuth, "", clock.Now())
	}
	check(t, "start", want{signer: r1, bundle: []*testCA{r1}})

	changed := a.Changed()
	// cert-manager renewed the self-signed CA: the old root is gone from
	// the Secret.
	if err := a.Update(secret(certManagerData(r2, r2))); err != nil {
		t.Fatal(err)
	}
	assertClosed(t, "Changed after a new root", changed)
	check(t, "new root in the Secret", want{signer: r1, bundle: []*testCA{r1, r2}, pending: []*testCA{r2}})

	if a.Activate(r1.cert, r3.cert) {
		t.Error("Activate(r1, r3) switched signing, but r2 was not acknowledged")
	}
	check(t, "unrelated acknowledgements", want{signer: r1, bundle: []*testCA{r1, r2}, pending: []*testCA{r2}})

	changed = a.Changed()
	if !a.Activate(r2.cert) {
		t.Error("Activate(r2) did not switch signing")
	}
	assertClosed(t, "Changed after the switch", changed)
	check(t, "acknowledged", want{signer: r2, bundle: []*testCA{r2, r1}})

	clock.Advance(DefaultCertLifetime - time.Minute)
	a.refresh()
	check(t, "r1 still in its grace period", want{signer: r2, bundle: []*testCA{r2, r1}})
	clock.Advance(2 * time.Minute)
	a.refresh()
	check(t, "r1 retired", want{signer: r2, bundle: []*testCA{r2}})

	// Staging r3 as an extra root ahead makes the later switch immediate.
	if err := a.Update(secret(map[string][]byte{pki.CACertFile: r2.certPEM, pki.CAKeyFile: r2.keyPEM, ExtraRootsKey: r3.certPEM})); err != nil {
		t.Fatal(err)
	}
	check(t, "r3 staged", want{signer: r2, bundle: []*testCA{r2, r3}, pending: []*testCA{r3}})
	if a.Activate(r3.cert) {
		t.Error("Activate(r3) switched signing, but r3 is only staged")
	}
	check(t, "r3 acknowledged", want{signer: r2, bundle: []*testCA{r2, r3}})
	if err := a.Update(secret(map[string][]byte{pki.CACertFile: r3.certPEM, pki.CAKeyFile: r3.keyPEM, ExtraRootsKey: r2.certPEM})); err != nil {
		t.Fatal(err)
	}
	check(t, "switch to the acknowledged r3", want{signer: r3, bundle: []*testCA{r3, r2}})

	// An invalid version changes nothing.
	if err := a.Update(secret(map[string][]byte{pki.CACertFile: r1.certPEM, pki.CAKeyFile: r2.keyPEM})); err == nil {
		t.Error("Update(mismatched key) error = nil")
	}
	check(t, "invalid Secret ignored", want{signer: r3, bundle: []*testCA{r3, r2}})
}

func certsOf(cas []*testCA) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range cas {
		out = append(out, c.cert)
	}
	return out
}

func assertClosed(tb testing.TB, what string, ch <-chan struct{}) {
	tb.Helper()
	select {
	case <-ch:
	default:
		tb.Errorf("%s: channel not closed", what)
	}
}

// TestAuthorityRunFollowsSecret: a change to the Secret reaches a running
// Authority through its watch.
func TestAuthorityRunFollowsSecret(t *testing.T) {
	r1, r2 := newRoot(t, "root 1", ""), newRoot(t, "root 2", "")
	client := fake.NewClientset(secret(weftData(r1)))
	a := newTestAuthority(t, client, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()

	if _, err := client.CoreV1().Secrets(testNamespace).Update(ctx, secret(weftData(r2)), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		return sameCerts(a.PendingRoots(), []*x509.Certificate{r2.cert}), fmt.Sprintf("pending roots = %v after the Secret changed, want [root 2]", subjects(a.PendingRoots()))
	})
	if !a.Signer().Certificate().Equal(r1.cert) {
		t.Errorf("signer = %q before any acknowledgement, want root 1", a.Signer().Certificate().Subject)
	}
}
