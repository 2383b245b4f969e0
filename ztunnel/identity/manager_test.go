package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/spiffe"
)

func TestAcquireIssuesTheIdentity(t *testing.T) {
	clock := newFakeClock()
	m, _ := newTestManager(t, newTestCA(t), clock, Options{})
	mustAcquire(t, m, idServer)

	cert, err := m.Certificate(idServer)
	if err != nil {
		t.Fatalf("Certificate() = %v", err)
	}
	leaf := cert.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idServer.String() {
		t.Errorf("URI SANs = %v, want [%s]", leaf.URIs, idServer)
	}
	if got, want := leaf.NotAfter, start.Add(24*time.Hour); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v (24h after issue)", got, want)
	}
	if got, want := leaf.NotBefore, start.Add(-time.Minute); !got.Equal(want) {
		t.Errorf("NotBefore = %v, want %v", got, want)
	}
	if key, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok || !key.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("PrivateKey %T does not match the leaf", cert.PrivateKey)
	}
	if len(cert.Certificate) != 2 {
		t.Errorf("chain has %d certificates, want 2 (leaf, root)", len(cert.Certificate))
	}
	if exp, ok := m.Expiry(idServer); !ok || !exp.Equal(leaf.NotAfter) {
		t.Errorf("Expiry() = %v, %v; want %v, true", exp, ok, leaf.NotAfter)
	}
	st := statusOf(t, m, idServer)
	if want := start.Add(12 * time.Hour); !st.NextAttempt.Equal(want) || st.Refs != 1 || st.Serial != serialOf(cert) {
		t.Errorf("Status() = %+v, want NextAttempt %v (half-life), Refs 1, Serial %s", st, want, serialOf(cert))
	}
	if _, ok := m.Expiry(idOther); ok {
		t.Error("Expiry(not acquired) reported a certificate")
	}
}

func TestAcquireRefusesForeignIdentities(t *testing.T) {
	m, s := newTestManager(t, newTestCA(t), nil, Options{})
	tests := []struct {
		name    string
		id      spiffe.ID
		wantErr string
	}{
		{name: "zero", id: spiffe.ID{}, wantErr: "invalid SPIFFE ID"},
		{name: "invalid namespace", id: spiffe.ID{TrustDomain: "cluster.local", Namespace: "Shop", ServiceAccount: "cart"}, wantErr: "invalid SPIFFE ID"},
		{name: "other trust domain", id: spiffe.ID{TrustDomain: "example.org", Namespace: "shop", ServiceAccount: "cart"}, wantErr: `not in trust domain "cluster.local"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.Acquire(context.Background(), tt.id)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Acquire(%+v) = %v, want an error containing %q", tt.id, err, tt.wantErr)
			}
		})
	}
	if n := len(s.Calls()); n != 0 {
		t.Errorf("signer called %d times for refused identities, want 0", n)
	}
	if st := m.Status(); len(st) != 0 {
		t.Errorf("Status() = %+v after refusals, want nothing held", st)
	}
}

func TestConcurrentAcquiresSignOnce(t *testing.T) {
	m, s := newTestManager(t, newTestCA(t), nil, Options{})
	s.gate = make(chan struct{})
	const n = 50
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { errs <- m.Acquire(context.Background(), idServer) })
	}
	// Hold the one signing until every Acquire is waiting on it.
	waitFor(t, "50 references", func() bool { return statusOf(t, m, idServer).Refs == n })
	close(s.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Acquire() = %v", err)
		}
	}
	if got := len(s.Calls()); got != 1 {
		t.Fatalf("signer called %d times for %d concurrent Acquires, want 1", got, n)
	}

	for i := range n - 1 {
		m.Release(idServer)
		if _, err := m.Certificate(idServer); err != nil {
			t.Fatalf("Certificate() after %d of %d releases = %v, want the certificate", i+1, n, err)
		}
	}
	m.Release(idServer)
	if _, err := m.Certificate(idServer); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("Certificate() after the last release = %v, want ErrNoCertificate", err)
	}
	mustAcquire(t, m, idServer)
	if got := len(s.Calls()); got != 2 {
		t.Errorf("signer called %d times after re-acquiring a forgotten identity, want 2", got)
	}
}

func TestSharedSigningFailureFailsEveryWaiterOnce(t *testing.T) {
	m, s := newTestManager(t, newTestCA(t), nil, Options{})
	s.gate = make(chan struct{})
	s.setFail(errors.New("CA unavailable"))
	const n = 10
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { errs <- m.Acquire(context.Background(), idServer) })
	}
	waitFor(t, "10 references", func() bool { return statusOf(t, m, idServer).Refs == n })
	close(s.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil || !strings.Contains(err.Error(), "CA unavailable") {
			t.Errorf("Acquire() = %v, want the signer's error", err)
		}
	}
	if got := len(s.Calls()); got != 1 {
		t.Errorf("signer called %d times, want 1 (waiters share the failure)", got)
	}
	if st := m.Status(); len(st) != 0 {
		t.Errorf("Status() = %+v after failed Acquires, want nothing held", st)
	}
}

func TestCancelledAcquireDoesNotFailOthers(t *testing.T) {
	m, s := newTestManager(t, newTestCA(t), nil, Options{})
	s.gate = make(chan struct{})
	s.entered = make(chan struct{}, 4)

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- m.Acquire(ctx, idServer) }()
	<-s.entered // the first Acquire is signing
	second := make(chan error, 1)
	go func() { second <- m.Acquire(context.Background(), idServer) }()
	waitFor(t, "2 references", func() bool { return statusOf(t, m, idServer).Refs == 2 })

	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire() = %v, want context.Canceled", err)
	}
	<-s.entered // the second Acquire took over the signing
	close(s.gate)
	if err := <-second; err != nil {
		t.Fatalf("second Acquire() = %v, want success after the first was cancelled", err)
	}
	if st := statusOf(t, m, idServer); st.Refs != 1 {
		t.Errorf("Refs = %d, want 1 (the cancelled Acquire took none)", st.Refs)
	}
}

// TestRenewalKeepsOpenConnections: at half-life Run renews both sides'
// certificates; a connection opened with the old ones keeps carrying data,
// and new connections present the new ones.
func TestRenewalKeepsOpenConnections(t *testing.T) {
	clock := newFakeClock()
	m, s := newTestManager(t, newTestCA(t), clock, Options{Poll: 2 * time.Millisecond})
	mustAcquire(t, m, idServer, idClient)
	startRun(t, m)
	addr := echoServer(t, m.ServerConfig(idServer))

	oldServer, _ := m.Certificate(idServer)
	oldClient, _ := m.Certificate(idClient)
	old := dialEcho(t, addr, m.ClientConfig(idClient, idServer))
	if want := idClient.String() + " " + serialOf(oldClient); old.seenAs != want {
		t.Fatalf("server saw the client as %q, want %q", old.seenAs, want)
	}
	if got, err := old.roundTrip("before"); err != nil || got != "before" {
		t.Fatalf("roundTrip(before) = %q, %v", got, err)
	}

	clock.Advance(12*time.Hour + time.Second)
	waitFor(t, "both certificates renewed", func() bool {
		return statusOf(t, m, idServer).Serial != serialOf(oldServer) && statusOf(t, m, idClient).Serial != serialOf(oldClient)
	})
	if got := len(s.Calls()); got != 4 {
		t.Errorf("signer called %d times, want 4 (2 issues, 2 renewals)", got)
	}
	newServer, err := m.Certificate(idServer)
	if err != nil {
		t.Fatal(err)
	}
	newClient, _ := m.Certificate(idClient)
	if want := clock.Now().Add(24 * time.Hour); !newServer.Leaf.NotAfter.Equal(want) {
		t.Errorf("renewed NotAfter = %v, want %v", newServer.Leaf.NotAfter, want)
	}
	if newServer.PrivateKey.(*ecdsa.PrivateKey).Equal(oldServer.PrivateKey) {
		t.Error("renewal reused the key; want a new key per certificate")
	}

	if got, err := old.roundTrip("after"); err != nil || got != "after" {
		t.Fatalf("roundTrip(after) on the connection opened before renewal = %q, %v; want it to keep working", got, err)
	}
	if got := old.serverSerial(); got != serialOf(oldServer) {
		t.Errorf("old connection's server serial = %s, want the old %s", got, serialOf(oldServer))
	}
	fresh := dialEcho(t, addr, m.ClientConfig(idClient, idServer))
	if got := fresh.serverSerial(); got != serialOf(newServer) {
		t.Errorf("new connection's server serial = %s, want the renewed %s", got, serialOf(newServer))
	}
	if want := idClient.String() + " " + serialOf(newClient); fresh.seenAs != want {
		t.Errorf("server saw the new client as %q, want %q", fresh.seenAs, want)
	}
}

// TestRenewalFailureBacksOff: failed renewals are retried after MinRetry,
// doubling up to MaxRetry; the old certificate is served until it expires;
// a later success resets everything.
func TestRenewalFailureBacksOff(t *testing.T) {
	clock := newFakeClock()
	m, s := newTestManager(t, newTestCA(t), clock, Options{Poll: 2 * time.Millisecond, MinRetry: time.Second, MaxRetry: 8 * time.Second})
	mustAcquire(t, m, idServer, idClient)
	startRun(t, m)
	addr := echoServer(t, m.ServerConfig(idServer))
	served, _ := m.Certificate(idServer)
	client, _ := m.Certificate(idClient)

	// Both renewals fail from here on; the server's schedule is checked.
	s.setFail(errors.New("operator unreachable"))
	calls := len(s.Calls())
	clock.Set(client.Leaf.NotAfter.Add(-time.Hour)) // past both half-lives, an hour before expiry
	for k, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second} {
		failures := k + 1
		waitFor(t, "another failure", func() bool { return statusOf(t, m, idServer).Failures >= failures })
		st := statusOf(t, m, idServer)
		if st.Failures != failures {
			t.Fatalf("Failures = %d, want %d: retried before the backoff elapsed", st.Failures, failures)
		}
		if got := st.NextAttempt.Sub(clock.Now()); got < want || got > want+want/10 {
			t.Errorf("after failure %d the retry is in %v, want %v plus at most 10%%", failures, got, want)
		}
		if st.LastError == nil || !strings.Contains(st.LastError.Error(), "operator unreachable") {
			t.Errorf("LastError = %v, want the signer's error", st.LastError)
		}
		cert, err := m.Certificate(idServer)
		if err != nil || serialOf(cert) != serialOf(served) {
			t.Fatalf("Certificate() during failing renewals = %v, %v; want the old certificate", cert, err)
		}
		clock.Set(st.NextAttempt)
	}
	waitFor(t, "the 7th failure", func() bool { return statusOf(t, m, idServer).Failures >= 7 })
	var serverCalls []time.Time
	for _, c := range s.Calls()[calls:] {
		if c.id == idServer {
			serverCalls = append(serverCalls, c.at)
		}
	}
	if len(serverCalls) != 7 {
		t.Errorf("signer called %d times for the server in 6 backoff steps, want 7", len(serverCalls))
	}

	// The old certificate still serves mesh connections.
	conn := dialEcho(t, addr, m.ClientConfig(idClient, idServer))
	if got := conn.serverSerial(); got != serialOf(served) {
		t.Errorf("server presented serial %s during failing renewals, want the old %s", got, serialOf(served))
	}

	// Past its expiry the old certificate is no longer offered.
	clock.Set(served.Leaf.NotAfter)
	if _, err := m.Certificate(idServer); !errors.Is(err, ErrNoCertificate) || !strings.Contains(err.Error(), "operator unreachable") {
		t.Errorf("Certificate() after expiry = %v, want ErrNoCertificate naming the signer's error", err)
	}

	s.setFail(nil)
	clock.Advance(10 * time.Second) // past any backoff
	waitFor(t, "a successful renewal", func() bool {
		st := statusOf(t, m, idServer)
		return st.Failures == 0 && st.Serial != serialOf(served)
	})
	if _, err := m.Certificate(idServer); err != nil {
		t.Errorf("Certificate() after recovery = %v", err)
	}
	if st := statusOf(t, m, idServer); st.LastError != nil {
		t.Errorf("LastError after recovery = %v, want nil", st.LastError)
	}
}

// TestSignerNeverSeesTheKey: what the Signer receives is a CSR holding the
// public key only.
func TestSignerNeverSeesTheKey(t *testing.T) {
	m, s := newTestManager(t, newTestCA(t), nil, Options{})
	mustAcquire(t, m, idServer)
	cert, _ := m.Certificate(idServer)
	key := cert.PrivateKey.(*ecdsa.PrivateKey)
	scalar, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	calls := s.Calls()
	if len(calls) != 1 {
		t.Fatalf("signer called %d times, want 1", len(calls))
	}
	got := calls[0]
	if got.id != idServer {
		t.Errorf("signer asked for %s, want %s", got.id, idServer)
	}
	block, rest := pem.Decode(got.csr)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("signer received %q, want one CERTIFICATE REQUEST block", got.csr)
	}
	for what, secret := range map[string][]byte{"private scalar": scalar, "PKCS#8 key": pkcs8} {
		if bytes.Contains(block.Bytes, secret) || bytes.Contains(got.csr, secret) {
			t.Errorf("the CSR contains the %s", what)
		}
	}
	if bytes.Contains(got.csr, []byte("PRIVATE")) {
		t.Error("the CSR mentions a private key")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(csr.PublicKey) {
		t.Error("the CSR's public key is not the certificate's")
	}
}

func TestSignedChainIsChecked(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	tests := []struct {
		name    string
		sign    func(csr []byte, id spiffe.ID) ([]byte, error)
		wantErr string
	}{
		{
			name:    "nothing",
			sign:    func([]byte, spiffe.ID) ([]byte, error) { return []byte("no pem"), nil },
			wantErr: "no certificate",
		},
		{
			name: "another key",
			sign: func(_ []byte, id spiffe.ID) ([]byte, error) {
				c := ca.leaf(t, id, time.Now(), time.Hour)
				return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), nil
			},
			wantErr: "not for the key of the CSR",
		},
		{
			name: "untrusted CA",
			sign: func(csr []byte, id spiffe.ID) ([]byte, error) {
				return other.ca.SignCSR(csr, id, time.Hour, time.Now())
			},
			wantErr: "trust bundle",
		},
		{
			name: "another identity",
			sign: func(csrPEM []byte, _ spiffe.ID) ([]byte, error) {
				block, _ := pem.Decode(csrPEM)
				csr, err := x509.ParseCertificateRequest(block.Bytes)
				if err != nil {
					return nil, err
				}
				tmpl := &x509.Certificate{
					SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
					KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
					URIs: []*url.URL{idServer.URL()},
				}
				der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
				return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), err
			},
			wantErr: "issued for spiffe://cluster.local/ns/shop/sa/cart, want spiffe://cluster.local/ns/shop/sa/web",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewManager(signerFunc(tt.sign), staticRoots{ca.cert}, Options{}, testLogger(t))
			err := m.Acquire(context.Background(), idClient)
			if err == nil {
				t.Fatalf("Acquire() = nil, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Acquire() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

type signerFunc func(csr []byte, id spiffe.ID) ([]byte, error)

func (f signerFunc) Sign(_ context.Context, csr []byte, id spiffe.ID) ([]byte, error) {
	return f(csr, id)
}

func TestSetExtraRoots(t *testing.T) {
	ca := newTestCA(t)
	extra := newTestCA(t)
	m := NewManager(newCASigner(ca, time.Now), staticRoots{ca.cert}, Options{}, testLogger(t))
	extraLeaf := extra.leaf(t, idClient, time.Now(), time.Hour)
	verifies := func() bool {
		_, _, err := spiffe.VerifyChain(extraLeaf.Certificate, m.Roots(), "cluster.local", x509.ExtKeyUsageClientAuth, time.Now())
		return err == nil
	}
	if verifies() {
		t.Fatal("a certificate of an unknown CA verifies before SetExtraRoots")
	}
	if err := m.SetExtraRoots(extra.certPEM); err != nil {
		t.Fatalf("SetExtraRoots() = %v", err)
	}
	if !verifies() {
		t.Fatal("a certificate of the extra root does not verify after SetExtraRoots")
	}

	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: extraLeaf.Certificate[0]})
	for name, bad := range map[string][]byte{
		"a leaf":         leafPEM,
		"a key":          extra.keyPEM,
		"garbage inside": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}),
	} {
		if err := m.SetExtraRoots(append(bytes.Clone(extra.certPEM), bad...)); err == nil {
			t.Errorf("SetExtraRoots(root + %s) = nil, want an error", name)
		}
		if !verifies() {
			t.Fatalf("a refused SetExtraRoots(%s) dropped the previous extra roots", name)
		}
	}

	// The returned pool is a copy.
	m.Roots().AddCert(newTestCA(t).cert)
	if err := m.SetExtraRoots(nil); err != nil {
		t.Fatalf("SetExtraRoots(nil) = %v", err)
	}
	if verifies() {
		t.Error("the extra root still verifies after SetExtraRoots(nil)")
	}
	if _, _, err := spiffe.VerifyChain(ca.leaf(t, idClient, time.Now(), time.Hour).Certificate, m.Roots(), "cluster.local", x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
		t.Errorf("the RootSource's root no longer verifies: %v", err)
	}
}
