package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/spiffe"
)

// testID is the identity most tests sign.
var testID = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}

func ecKey(tb testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// rsaKeys caches RSA keys by size: generating them is the slowest thing
// these tests would do.
var rsaKeys = map[int]*rsa.PrivateKey{}

func rsaKey(tb testing.TB, bits int) *rsa.PrivateKey {
	tb.Helper()
	if k, ok := rsaKeys[bits]; ok {
		return k
	}
	// Sizes below 1024 need the rsa1024min GODEBUG; tests use 1024 as the
	// weak size.
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatal(err)
	}
	rsaKeys[bits] = k
	return k
}

func edKey(tb testing.TB) ed25519.PrivateKey {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func pkcs8PEM(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// caTemplate is a CA certificate template valid for a year around now.
func caTemplate(name string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// issue creates a certificate from tmpl for pub, signed by parent's key
// (self-signed when parent is nil).
func issue(tb testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	tb.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// newRoot returns a generated root CA and its key.
func newRoot(tb testing.TB) (*CA, *x509.Certificate, crypto.Signer) {
	tb.Helper()
	certPEM, keyPEM, err := GenerateRoot("cluster.local", 24*time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return ca, ca.Certificate(), key
}

func csrFor(tb testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func uris(ids ...string) []*url.URL {
	var out []*url.URL
	for _, s := range ids {
		u, err := url.Parse(s)
		if err != nil {
			panic(err)
		}
		out = append(out, u)
	}
	return out
}

// parseChain parses a PEM chain.
func parseChain(tb testing.TB, chainPEM []byte) []*x509.Certificate {
	tb.Helper()
	certs, err := parseCertificates(chainPEM)
	if err != nil {
		tb.Fatalf("parse chain: %v", err)
	}
	if len(certs) == 0 {
		tb.Fatal("empty chain")
	}
	return certs
}

func rawChain(certs []*x509.Certificate) [][]byte {
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		raw[i] = c.Raw
	}
	return raw
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func mustSEC1(tb testing.TB, key *ecdsa.PrivateKey) []byte {
	tb.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// mustCSR returns a CSR for id with a new P-256 key, as NewCSR makes it.
func mustCSR(tb testing.TB, id spiffe.ID) []byte {
	tb.Helper()
	csr, err := NewCSR(ecKey(tb, elliptic.P256()), id)
	if err != nil {
		tb.Fatal(err)
	}
	return csr
}
