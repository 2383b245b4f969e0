package ca

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

// Defaults of AuthorityOptions.
const (
	DefaultSecretName   = "weft-ca"
	DefaultRootLifetime = 10 * 365 * 24 * time.Hour
	DefaultCertLifetime = 24 * time.Hour
)

// AuthorityOptions configure an Authority.
type AuthorityOptions struct {
	// Client reads, creates and watches the CA Secret.
	Client kubernetes.Interface
	// Namespace is the install namespace, where the Secret lives. Required.
	Namespace string
	// SecretName is the CA Secret's name; default DefaultSecretName.
	SecretName string
	// TrustDomain is the mesh's; default spiffe.DefaultTrustDomain. A CA
	// whose certificate names another trust domain is refused.
	TrustDomain string
	// RootLifetime is the lifetime of a root generated when the Secret does
	// not exist; default DefaultRootLifetime.
	RootLifetime time.Duration
	// CertLifetime is the longest lifetime of a certificate the CA issues;
	// a root that signing moved off stays in the trust bundle that long, so
	// what it signed keeps verifying until it expires. Default
	// DefaultCertLifetime.
	CertLifetime time.Duration
	// Log defaults to discarding.
	Log *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Authority is the mesh CA: the root from the Secret weft-ca (user-supplied
// in weft's or cert-manager's format, or generated once and stored there),
// the signer in use, and the trust bundle.
//
// # Rotation
//
// Signing moves to a new root only once every node trusts it
// (ARCHITECTURE.md §4). When the Secret changes so that it signs with a CA
// whose anchors are not all acknowledged, that CA becomes the candidate: its
// roots join the trust bundle and PendingRoots, but Signer stays the old CA
// (whose roots stay in the bundle even if the Secret dropped them, as
// cert-manager's renewal of a self-signed CA does). The operator streams the
// bundle to every node; once all acknowledged it, it calls Activate with the
// roots they acknowledged, and signing switches. The old CA's anchors then
// stay in the bundle for CertLifetime, until everything they signed has
// expired. Extra roots staged in the Secret (ExtraRootsKey, cert-manager's
// ca.crt) are pending until acknowledged too, so a later switch to them is
// immediate. At start nothing is known about the nodes: the Secret's CA
// signs at once and only its anchors count as acknowledged, so an operator
// restart in the middle of a rotation completes it.
//
// An Authority is safe for concurrent use.
type Authority struct {
	client       kubernetes.Interface
	namespace    string
	secretName   string
	trustDomain  string
	certLifetime time.Duration
	log          *slog.Logger
	now          func() time.Time

	// view is what signing reads: replaced whole, never changed.
	view atomic.Pointer[view]

	// mu guards the fields below.
	mu sync.Mutex
	// active signs; latest is the Secret's current CA (the same as active
	// unless a rotation is pending). Both are non-nil.
	active, latest *material
	// acked are the roots every node has acknowledged, among the bundle's.
	acked map[fingerprint]bool
	// retired are roots that signing moved off, kept until the time given.
	retired map[fingerprint]retiredRoot
	// changed is closed and replaced when the bundle or the signer changes.
	changed chan struct{}
}

// view is one consistent state of the CA for readers.
type view struct {
	signer    *material
	bundle    []*x509.Certificate
	bundlePEM []byte
	pending   []*x509.Certificate
}

type retiredRoot struct {
	cert  *x509.Certificate
	until time.Time
}

// NewAuthority loads the CA from the Secret, or, when the Secret does not
// exist, generates a root and creates the Secret with it. Two operator
// replicas starting at once both end up with the root of whichever created
// the Secret first. A Secret that exists but does not hold a valid CA is an
// error: it is never overwritten.
func NewAuthority(ctx context.Context, opts AuthorityOptions) (*Authority, error) {
	if opts.Client == nil || opts.Namespace == "" {
		return nil, errors.New("create CA: a client and the install namespace are required")
	}
	a := &Authority{
		client:       opts.Client,
		namespace:    opts.Namespace,
		secretName:   cmp.Or(opts.SecretName, DefaultSecretName),
		trustDomain:  cmp.Or(opts.TrustDomain, spiffe.DefaultTrustDomain),
		certLifetime: cmp.Or(opts.CertLifetime, DefaultCertLifetime),
		log:          opts.Log,
		now:          opts.Now,
		acked:        map[fingerprint]bool{},
		retired:      map[fingerprint]retiredRoot{},
		changed:      make(chan struct{}),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("component", "ca", "secret", a.namespace+"/"+a.secretName)
	if a.now == nil {
		a.now = time.Now
	}
	if a.certLifetime < 0 {
		return nil, fmt.Errorf("create CA: certificate lifetime %v is negative", a.certLifetime)
	}
	if _, err := spiffe.NewID(a.trustDomain, "default", "default"); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	secret, err := a.loadOrCreate(ctx, cmp.Or(opts.RootLifetime, DefaultRootLifetime))
	if err != nil {
		return nil, err
	}
	m, err := a.parse(secret)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.active, a.latest = m, m
	for _, r := range m.anchors {
		a.acked[fingerprintOf(r)] = true
	}
	a.publishLocked()
	a.mu.Unlock()
	a.log.Info("mesh CA loaded", "format", m.format, "signer", m.ca.Certificate().Subject.String(), "roots", subjects(a.view.Load().bundle))
	return a, nil
}

// loadOrCreate returns the Secret, creating it with a generated root if it
// does not exist.
func (a *Authority) loadOrCreate(ctx context.Context, rootLifetime time.Duration) (*corev1.Secret, error) {
	secrets := a.client.CoreV1().Secrets(a.namespace)
	// A few rounds cover a Secret deleted between another replica's create
	// and this replica's read.
	for range 3 {
		s, err := secrets.Get(ctx, a.secretName, metav1.GetOptions{})
		if err == nil {
			return s, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("get secret %s/%s: %w", a.namespace, a.secretName, err)
		}
		data, err := generateSecretData(a.trustDomain, rootLifetime)
		if err != nil {
			return nil, err
		}
		s, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:   a.secretName,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "weft-operator"},
				Annotations: map[string]string{
					"weft.io/generated": "a mesh root generated by weft-operator because the Secret did not exist; replace it (ca.crt/ca.key or cert-manager's tls.crt/tls.key/ca.crt) to bring your own",
				},
			},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}, metav1.CreateOptions{FieldManager: "weft-operator"})
		switch {
		case err == nil:
			a.log.Info("generated the mesh root and stored it", "trustDomain", a.trustDomain, "lifetime", rootLifetime)
			return s, nil
		case apierrors.IsAlreadyExists(err):
			// Another replica won the race: use its root.
			continue
		default:
			return nil, fmt.Errorf("create secret %s/%s: %w", a.namespace, a.secretName, err)
		}
	}
	return nil, fmt.Errorf("load secret %s/%s: it keeps disappearing", a.namespace, a.secretName)
}

func (a *Authority) parse(s *corev1.Secret) (*material, error) {
	m, err := parseSecret(s.Data)
	if err != nil {
		return nil, fmt.Errorf("load CA from secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if td := m.ca.TrustDomain(); td != "" && td != a.trustDomain {
		return nil, fmt.Errorf("load CA from secret %s/%s: its certificate names trust domain %q, the mesh's is %q", s.Namespace, s.Name, td, a.trustDomain)
	}
	return m, nil
}

// TrustDomain returns the mesh's trust domain.
func (a *Authority) TrustDomain() string { return a.trustDomain }

// Signer returns the CA that signs now.
func (a *Authority) Signer() *pki.CA { return a.view.Load().signer.ca }

// TrustBundle returns every root peers must trust now: the signer's
// anchors, every root the Secret lists, and retired roots still in their
// grace period. Callers must not modify the certificates.
func (a *Authority) TrustBundle() []*x509.Certificate {
	return slices.Clone(a.view.Load().bundle)
}

// TrustBundlePEM returns TrustBundle as concatenated PEM certificates.
// Callers must not modify it.
func (a *Authority) TrustBundlePEM() []byte { return a.view.Load().bundlePEM }

// PendingRoots returns the roots of the trust bundle that not every node has
// acknowledged yet (see Activate). Callers must not modify them.
func (a *Authority) PendingRoots() []*x509.Certificate {
	return slices.Clone(a.view.Load().pending)
}

// Changed returns a channel that is closed the next time the trust bundle,
// the pending roots or the signer change.
func (a *Authority) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// Activate records that every node has acknowledged a trust bundle holding
// roots. If a candidate CA is waiting only for these, signing switches to
// it, and Activate reports true. Roots no longer in the bundle are ignored:
// an acknowledgement can cross a Secret change.
func (a *Authority) Activate(roots ...*x509.Certificate) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	inBundle := a.view.Load().bundle
	for _, r := range roots {
		if containsCert(inBundle, r) {
			a.acked[fingerprintOf(r)] = true
		}
	}
	switched := false
	if !a.latest.signs(a.active) && a.ackedLocked(a.latest.anchors) {
		a.switchLocked(a.latest)
		switched = true
	}
	a.publishLocked()
	return switched
}

// Update applies a new version of the Secret. A Secret that does not hold a
// valid CA is an error and changes nothing: signing goes on with the
// current CA.
func (a *Authority) Update(s *corev1.Secret) error {
	m, err := a.parse(s)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case m.signs(a.active):
		// Same signer; the listed roots may differ.
		a.active = m
	case a.ackedLocked(m.anchors):
		a.switchLocked(m)
	default:
		a.log.Info("new CA in the Secret: signing moves to it once every node trusts its roots",
			"signer", m.ca.Certificate().Subject.String(), "pending", subjects(m.anchors))
	}
	a.latest = m
	a.publishLocked()
	return nil
}

// ackedLocked reports whether every root is acknowledged. a.mu must be held.
func (a *Authority) ackedLocked(roots []*x509.Certificate) bool {
	for _, r := range roots {
		if !a.acked[fingerprintOf(r)] {
			return false
		}
	}
	return true
}

// switchLocked makes next the signer and keeps the old signer's anchors
// trusted for a certificate lifetime. a.mu must be held.
func (a *Authority) switchLocked(next *material) {
	until := a.now().Add(a.certLifetime)
	for _, r := range a.active.anchors {
		if containsCert(next.roots, r) {
			continue
		}
		a.retired[fingerprintOf(r)] = retiredRoot{cert: r, until: minTime(until, r.NotAfter)}
	}
	for _, r := range next.roots {
		delete(a.retired, fingerprintOf(r))
	}
	a.log.Info("CA switched: signing with the new CA", "signer", next.ca.Certificate().Subject.String(), "previous", a.active.ca.Certificate().Subject.String())
	a.active = next
}

// publishLocked recomputes the view, drops expired retired roots, and
// signals Changed if anything readers see changed. a.mu must be held.
func (a *Authority) publishLocked() {
	now := a.now()
	for fp, r := range a.retired {
		if !now.Before(r.until) {
			delete(a.retired, fp)
			a.log.Info("retired root left the trust bundle", "root", r.cert.Subject.String())
		}
	}
	var retired []*x509.Certificate
	for _, r := range a.retired {
		retired = append(retired, r.cert)
	}
	// Map order must not reorder an unchanged bundle.
	slices.SortFunc(retired, func(x, y *x509.Certificate) int { return slices.Compare(x.Raw, y.Raw) })
	bundle := appendUnique(nil, a.active.anchors...)
	bundle = appendUnique(bundle, a.latest.roots...)
	bundle = appendUnique(bundle, retired...)
	inBundle := map[fingerprint]bool{}
	var pending []*x509.Certificate
	for _, r := range bundle {
		fp := fingerprintOf(r)
		inBundle[fp] = true
		if !a.acked[fp] {
			pending = append(pending, r)
		}
	}
	// An acknowledgement holds for a root only while nodes keep it.
	for fp := range a.acked {
		if !inBundle[fp] {
			delete(a.acked, fp)
		}
	}
	v := &view{signer: a.active, bundle: bundle, bundlePEM: encodeCerts(bundle), pending: pending}
	if old := a.view.Load(); old != nil && old.signer == v.signer &&
		slices.EqualFunc(old.bundle, v.bundle, (*x509.Certificate).Equal) &&
		slices.EqualFunc(old.pending, v.pending, (*x509.Certificate).Equal) {
		return
	}
	a.view.Store(v)
	close(a.changed)
	a.changed = make(chan struct{})
}

// nextRetirement returns when the next retired root leaves the bundle.
func (a *Authority) nextRetirement() (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next time.Time
	for _, r := range a.retired {
		if next.IsZero() || r.until.Before(next) {
			next = r.until
		}
	}
	return next, !next.IsZero()
}

// refresh drops retired roots whose time has come.
func (a *Authority) refresh() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.publishLocked()
}

// Run follows the Secret until ctx ends: each change goes through Update
// (an invalid version is logged and ignored), and retired roots leave the
// bundle when their time comes. A deleted Secret changes nothing: signing
// goes on with the CA in memory.
func (a *Authority) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithNamespace(a.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", a.secretName).String()
		}))
	onSecret := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		if err := a.Update(s); err != nil {
			a.log.Error("ignoring the new version of the CA Secret; signing goes on with the current CA", "resourceVersion", s.ResourceVersion, "err", err)
		}
	}
	if _, err := factory.Core().V1().Secrets().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onSecret,
		UpdateFunc: func(_, obj any) { onSecret(obj) },
		DeleteFunc: func(any) {
			a.log.Warn("the CA Secret was deleted; signing goes on with the CA in memory, but a restarted operator would generate a new root")
		},
	}); err != nil {
		return fmt.Errorf("watch secret %s/%s: %w", a.namespace, a.secretName, err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	for {
		changed := a.Changed()
		var expire <-chan time.Time
		var timer *time.Timer
		if next, ok := a.nextRetirement(); ok {
			timer = time.NewTimer(next.Sub(a.now()))
			expire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-expire:
			a.refresh()
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func subjects(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = c.Subject.String()
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
