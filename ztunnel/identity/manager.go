package identity

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

// ErrNoCertificate is wrapped by Certificate's errors: the identity is not
// acquired, its first certificate is not issued yet, or its certificate
// expired while renewals failed.
var ErrNoCertificate = errors.New("no valid certificate")

// Defaults of Options.
const (
	DefaultRenewAt     = 0.5
	DefaultMinRetry    = time.Second
	DefaultMaxRetry    = time.Minute
	DefaultPoll        = 5 * time.Second
	DefaultSignTimeout = 30 * time.Second
)

// Options configure a Manager. Zero fields take the defaults. NewManager
// copies them; changing them afterwards has no effect.
type Options struct {
	// TrustDomain is the mesh's; the Manager acquires and accepts only its
	// identities. Default spiffe.DefaultTrustDomain.
	TrustDomain string
	// RenewAt is the fraction of a certificate's lifetime (from when it
	// was received) after which Run renews it. Default 0.5, in (0, 1).
	RenewAt float64
	// Now is the clock for renewal deadlines and for verifying peers.
	// Default time.Now.
	Now func() time.Time
	// MinRetry and MaxRetry bound the exponential backoff between failed
	// renewals (plus up to 10% jitter, so nodes that failed together do
	// not retry together). Defaults 1s and 1m.
	MinRetry, MaxRetry time.Duration
	// Poll is how often Run re-reads the RootSource and re-checks the
	// deadlines against Now. Deadlines have timers of their own; polling
	// also catches a Now that jumps (a suspended VM, an injected clock).
	// Default 5s.
	Poll time.Duration
	// SignTimeout bounds one call to the Signer. Default 30s.
	SignTimeout time.Duration
}

// CertStatus is what a Manager held for one identity when Status was
// called, for debug output and readiness checks: a copy, owned by the
// caller.
type CertStatus struct {
	ID   spiffe.ID
	Refs int // Acquires not yet released
	// NotBefore, NotAfter and Serial describe the current certificate; they
	// are zero before the first one is issued.
	NotBefore, NotAfter time.Time
	Serial              string
	// NextAttempt is when Run signs again: the renewal time, or the next
	// retry after failures.
	NextAttempt time.Time
	Failures    int   // consecutive failed signings since the last success
	LastError   error // of the last failed signing; nil after a success
}

// Manager holds the node's workload certificates and trust bundle. It is
// safe for concurrent use; Run must be running for certificates to be
// renewed.
type Manager struct {
	signer Signer
	source RootSource // may be nil
	opts   Options
	log    *slog.Logger
	// wake tells Run that a deadline may have moved earlier.
	wake chan struct{}
	// roots is the current trust bundle. It is replaced, never modified,
	// so handshakes read it without the lock.
	roots atomic.Pointer[x509.CertPool]
	// sourceRead is set once the RootSource was read successfully.
	sourceRead atomic.Bool

	// mu guards the fields below. It is never held while signing or
	// calling the RootSource.
	mu      sync.Mutex
	entries map[spiffe.ID]*entry
	// sourceRoots and extraRoots are what roots was built from.
	sourceRoots, extraRoots []*x509.Certificate
}

// entry is one held identity. Its fields are guarded by Manager.mu.
type entry struct {
	refs        int
	cert        *tls.Certificate // nil until the first signing succeeds; Leaf set
	nextAttempt time.Time
	failures    int
	lastErr     error
	flight      *flight // the signing in progress, or nil
}

// flight is one signing that concurrent Acquires and Run share.
type flight struct {
	done chan struct{} // closed when the signing finished
	// err is the signing's result, and abandoned says the signer's own
	// context ended, so a waiter whose context lives should sign itself.
	// Both are written before done is closed.
	err       error
	abandoned bool
}

// NewManager returns a Manager that signs with s and takes the trust bundle
// from roots (nil: only SetExtraRoots) plus SetExtraRoots.
func NewManager(s Signer, roots RootSource, opts Options, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "identity")
	opts.TrustDomain = cmp.Or(opts.TrustDomain, spiffe.DefaultTrustDomain)
	if opts.RenewAt <= 0 || opts.RenewAt >= 1 {
		if opts.RenewAt != 0 {
			log.Warn("renewal fraction out of range (0, 1); using the default", "renew_at", opts.RenewAt, "default", DefaultRenewAt)
		}
		opts.RenewAt = DefaultRenewAt
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.MinRetry = cmp.Or(opts.MinRetry, DefaultMinRetry)
	opts.MaxRetry = max(cmp.Or(opts.MaxRetry, DefaultMaxRetry), opts.MinRetry)
	opts.Poll = cmp.Or(opts.Poll, DefaultPoll)
	opts.SignTimeout = cmp.Or(opts.SignTimeout, DefaultSignTimeout)
	m := &Manager{
		signer:  s,
		source:  roots,
		opts:    opts,
		log:     log,
		wake:    make(chan struct{}, 1),
		entries: make(map[spiffe.ID]*entry),
	}
	m.roots.Store(x509.NewCertPool())
	return m
}

// Run renews each held certificate once RenewAt of its lifetime has passed,
// retries failed renewals with backoff while the current certificate keeps
// being served until it expires, and follows the RootSource. It returns nil
// once ctx ends. Call Run once.
func (m *Manager) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		m.refreshRoots()
		m.renewDue(ctx)
		timer.Reset(m.untilNext())
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-m.wake:
		}
	}
}

// untilNext returns how long Run may sleep: until the earliest attempt, at
// most Poll.
func (m *Manager) untilNext() time.Duration {
	now := m.opts.Now()
	wait := m.opts.Poll
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		if e.cert != nil && e.flight == nil {
			wait = min(wait, max(e.nextAttempt.Sub(now), 0))
		}
	}
	return wait
}

// renewDue signs, one after another, every held identity whose attempt is
// due. One at a time is enough: a node holds tens of identities, renewed
// hours apart.
func (m *Manager) renewDue(ctx context.Context) {
	now := m.opts.Now()
	m.mu.Lock()
	var due []spiffe.ID
	for id, e := range m.entries {
		if e.cert != nil && e.flight == nil && !now.Before(e.nextAttempt) {
			due = append(due, id)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(due, compareIDs)
	for _, id := range due {
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		e := m.entries[id]
		if e == nil || e.flight != nil {
			m.mu.Unlock()
			continue
		}
		f := m.startLocked(e)
		m.mu.Unlock()
		m.sign(ctx, id, e, f)
	}
}

// Acquire takes a reference on id's certificate (one per pod using the
// ServiceAccount) and returns once a valid certificate for id is held. The
// first Acquire generates the key and has the CSR signed; concurrent
// Acquires of one id share that signing. On error no reference is taken.
func (m *Manager) Acquire(ctx context.Context, id spiffe.ID) error {
	if _, err := spiffe.NewID(id.TrustDomain, id.Namespace, id.ServiceAccount); err != nil {
		return fmt.Errorf("acquire certificate: %w", err)
	}
	if id.TrustDomain != m.opts.TrustDomain {
		return fmt.Errorf("acquire certificate for %s: not in trust domain %q", id, m.opts.TrustDomain)
	}
	m.mu.Lock()
	e := m.entries[id]
	if e == nil {
		e = &entry{}
		m.entries[id] = e
	}
	e.refs++
	m.mu.Unlock()
	if err := m.await(ctx, id, e); err != nil {
		m.Release(id)
		return fmt.Errorf("acquire certificate for %s: %w", id, err)
	}
	return nil
}

// await returns once e holds a valid certificate, signing if nobody else is.
func (m *Manager) await(ctx context.Context, id spiffe.ID, e *entry) error {
	for {
		m.mu.Lock()
		if e.cert != nil && m.opts.Now().Before(e.cert.Leaf.NotAfter) {
			m.mu.Unlock()
			return nil
		}
		f := e.flight
		if f == nil {
			f = m.startLocked(e)
			m.mu.Unlock()
			if err := m.sign(ctx, id, e, f); err != nil {
				return err
			}
			continue
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-f.done:
		}
		if f.err != nil && !f.abandoned {
			return f.err
		}
	}
}

// startLocked registers a signing of e. m.mu must be held.
func (m *Manager) startLocked(e *entry) *flight {
	f := &flight{done: make(chan struct{})}
	e.flight = f
	return f
}

// sign runs the signing f of e, installs the result and wakes f's waiters.
func (m *Manager) sign(ctx context.Context, id spiffe.ID, e *entry, f *flight) error {
	sctx, cancel := context.WithTimeout(ctx, m.opts.SignTimeout)
	cert, err := m.issue(sctx, id)
	cancel()
	now := m.opts.Now()

	m.mu.Lock()
	defer m.mu.Unlock()
	f.err, f.abandoned = err, err != nil && ctx.Err() != nil
	e.flight = nil
	close(f.done)
	if err != nil {
		e.failures++
		e.lastErr = err
		e.nextAttempt = now.Add(m.backoff(e.failures))
		if e.cert == nil {
			m.log.Warn("sign certificate", "id", id.String(), "err", err)
			return err
		}
		valid := now.Before(e.cert.Leaf.NotAfter)
		m.log.Warn("renew certificate; will retry", "id", id.String(), "err", err, "failures", e.failures,
			"retry_at", e.nextAttempt, "serving_current", valid, "current_expires", e.cert.Leaf.NotAfter)
		return err
	}
	lifetime := cert.Leaf.NotAfter.Sub(now)
	e.cert = cert
	e.failures, e.lastErr = 0, nil
	e.nextAttempt = now.Add(time.Duration(float64(lifetime) * m.opts.RenewAt))
	m.log.Info("certificate issued", "id", id.String(), "serial", cert.Leaf.SerialNumber.Text(16),
		"expires", cert.Leaf.NotAfter, "renew_at", e.nextAttempt)
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return nil
}

// backoff returns the wait after the n-th consecutive failure: MinRetry
// doubled per failure up to MaxRetry, plus up to 10% jitter.
func (m *Manager) backoff(n int) time.Duration {
	d := m.opts.MaxRetry
	if n <= 30 {
		d = min(m.opts.MinRetry<<(n-1), m.opts.MaxRetry)
	}
	if jitter := d / 10; jitter > 0 {
		d += mrand.N(jitter)
	}
	return d
}

// issue generates a key, has a CSR for it signed and checks the result. A
// new key each time limits what one leaked key exposes to one lifetime.
func (m *Manager) issue(ctx context.Context, id spiffe.ID) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		return nil, err
	}
	chainPEM, err := m.signer.Sign(ctx, csr, id)
	if err != nil {
		return nil, fmt.Errorf("sign CSR: %w", err)
	}
	var chain [][]byte
	for rest := chainPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("check signed chain: PEM block %q, want CERTIFICATE", block.Type)
		}
		chain = append(chain, block.Bytes)
	}
	if len(chain) == 0 {
		return nil, errors.New("check signed chain: no certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("check signed chain: %w", err)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("check signed chain: the leaf is not for the key of the CSR")
	}
	// A certificate the bundle cannot verify would be refused by every
	// peer; the signer may be ahead of the bundle, so read it again first.
	m.refreshRoots()
	now := m.opts.Now()
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		got, _, err := spiffe.VerifyChain(chain, m.bundle(), m.opts.TrustDomain, usage, now)
		if err != nil {
			return nil, fmt.Errorf("check signed chain against the trust bundle: %w", err)
		}
		if got != id {
			return nil, fmt.Errorf("check signed chain: issued for %s, want %s", got, id)
		}
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// Release drops one reference taken by Acquire; the last one forgets the
// certificate and its key. Releasing an identity not held does nothing.
func (m *Manager) Release(id spiffe.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil {
		return
	}
	e.refs--
	if e.refs <= 0 {
		delete(m.entries, id)
	}
}

// Certificate returns id's current certificate, with Leaf set. Callers must
// not modify it. The error wraps ErrNoCertificate when id is not acquired,
// not issued yet, or expired.
func (m *Manager) Certificate(id spiffe.ID) (*tls.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	switch {
	case e == nil:
		return nil, fmt.Errorf("%w for %s: not acquired", ErrNoCertificate, id)
	case e.cert == nil:
		return nil, fmt.Errorf("%w for %s: not issued yet", ErrNoCertificate, id)
	case !m.opts.Now().Before(e.cert.Leaf.NotAfter):
		err := fmt.Errorf("%w for %s: expired at %s and not renewed", ErrNoCertificate, id, e.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		if e.lastErr != nil {
			err = fmt.Errorf("%w: %w", err, e.lastErr)
		}
		return nil, err
	}
	return e.cert, nil
}

// Expiry returns when id's current certificate expires, and false if no
// certificate for id is held.
func (m *Manager) Expiry(id spiffe.ID) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil || e.cert == nil {
		return time.Time{}, false
	}
	return e.cert.Leaf.NotAfter, true
}

// Status returns the state of every held identity, sorted by ID.
func (m *Manager) Status() []CertStatus {
	m.mu.Lock()
	out := make([]CertStatus, 0, len(m.entries))
	for id, e := range m.entries {
		s := CertStatus{ID: id, Refs: e.refs, NextAttempt: e.nextAttempt, Failures: e.failures, LastError: e.lastErr}
		if e.cert != nil {
			s.NotBefore, s.NotAfter = e.cert.Leaf.NotBefore, e.cert.Leaf.NotAfter
			s.Serial = e.cert.Leaf.SerialNumber.Text(16)
		}
		out = append(out, s)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b CertStatus) int { return compareIDs(a.ID, b.ID) })
	return out
}

func compareIDs(a, b spiffe.ID) int {
	return cmp.Or(cmp.Compare(a.TrustDomain, b.TrustDomain), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.ServiceAccount, b.ServiceAccount))
}
