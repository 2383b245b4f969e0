package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

const testNamespace = "weft-system"

// testCA is a CA certificate and its key, PEM and parsed.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

// newRoot makes a self-signed root named name; with trustDomain it names
// it in a spiffe URI SAN as pki.GenerateRoot does.
func newRoot(tb testing.TB, name, trustDomain string) *testCA {
	tb.Helper()
	return issueCA(tb, name, trustDomain, nil)
}

// newIntermediate makes a CA named name issued by parent.
func newIntermediate(tb testing.TB, name string, parent *testCA) *testCA {
	tb.Helper()
	return issueCA(tb, name, "", parent)
}

func issueCA(tb testing.TB, name, trustDomain string, parent *testCA) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if trustDomain != "" {
		tmpl.URIs = []*url.URL{{Scheme: "spiffe", Host: trustDomain}}
	}
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}
}

// weftData is a Secret's data in weft's format.
func weftData(ca *testCA) map[string][]byte {
	return map[string][]byte{pki.CACertFile: ca.certPEM, pki.CAKeyFile: ca.keyPEM}
}

// certManagerData is a Secret's data as cert-manager writes it: the CA,
// its key, and the root above it.
func certManagerData(ca, root *testCA) map[string][]byte {
	return map[string][]byte{pki.TLSCertFile: ca.certPEM, pki.TLSKeyFile: ca.keyPEM, pki.CACertFile: root.certPEM}
}

// newCSR returns a CSR for id with a fresh key.
func newCSR(tb testing.TB, id spiffe.ID) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		tb.Fatal(err)
	}
	return csr
}

// parsePEMCerts parses PEM certificates or fails the test.
func parsePEMCerts(tb testing.TB, data []byte) []*x509.Certificate {
	tb.Helper()
	certs, err := parseCerts(data)
	if err != nil {
		tb.Fatalf("parse PEM certificates: %v", err)
	}
	return certs
}

// verifyChain verifies a PEM chain (leaf first) against roots for usage
// at time at (zero: now) and returns the leaf.
func verifyChain(tb testing.TB, chainPEM []byte, roots []*x509.Certificate, usage x509.ExtKeyUsage, dnsName string, at time.Time) *x509.Certificate {
	tb.Helper()
	chain := parsePEMCerts(tb, chainPEM)
	if len(chain) == 0 {
		tb.Fatal("empty chain")
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: dnsName, CurrentTime: at}); err != nil {
		tb.Fatalf("verify chain against %v: %v", subjects(roots), err)
	}
	return chain[0]
}

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testLog logs to the test.
func testLog(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(p))
	return len(p), nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		if !containsCert(b, c) {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds, failing the test with cond's last
// reason after timeout.
func waitFor(tb testing.TB, timeout time.Duration, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		select {
		case <-deadline:
			tb.Fatalf("after %v: %s", timeout, why)
		case <-tick.C:
		}
	}
}
