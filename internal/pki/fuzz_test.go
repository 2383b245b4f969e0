package pki

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/spiffe"
)

// fuzzID is the identity FuzzSignCSR asks for; the seeds in
// testdata/fuzz/FuzzSignCSR are CSRs for it and for near misses.
var fuzzID = spiffe.ID{TrustDomain: "cluster.local", Namespace: "fuzz", ServiceAccount: "app"}

var fuzzCA = sync.OnceValues(func() (*CA, error) {
	certPEM, keyPEM, err := GenerateRoot("cluster.local", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	return ParseCA(certPEM, keyPEM)
})

// FuzzSignCSR: arbitrary bytes as a CSR never panic, every refusal wraps
// ErrInvalidCSR, and whatever is issued is a non-CA leaf naming exactly the
// requested identity.
func FuzzSignCSR(f *testing.F) {
	ca, err := fuzzCA()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mustCSR(f, fuzzID))
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		// As given, and as DER in a PEM block, so the mutator reaches the
		// CSR parser and SAN checks without having to keep base64 intact.
		checkSigned(t, ca, data, now)
		checkSigned(t, ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: data}), now)
	})
}

// checkSigned signs csr for fuzzID and checks the FuzzSignCSR properties.
func checkSigned(t *testing.T, ca *CA, csr []byte, now time.Time) {
	t.Helper()
	chainPEM, err := ca.SignCSR(csr, fuzzID, time.Hour, now)
	if err != nil {
		if !errors.Is(err, ErrInvalidCSR) {
			t.Fatalf("SignCSR() = %v, want an error wrapping ErrInvalidCSR", err)
		}
		return
	}
	chain, err := parseCertificates(chainPEM)
	if err != nil || len(chain) != 2 {
		t.Fatalf("SignCSR() chain: %d certificates, %v; want 2", len(chain), err)
	}
	leaf := chain[0]
	id, _, err := spiffe.VerifyChain(rawChain(chain), pool(ca.Roots()...), "cluster.local", x509.ExtKeyUsageClientAuth, now)
	if err != nil || id != fuzzID {
		t.Fatalf("issued certificate verifies as %v, %v; want %v", id, err, fuzzID)
	}
	if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.IsCA {
		t.Fatalf("issued certificate has URIs %v, DNS %v, IPs %v, e-mails %v, CA %v; want only %s", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.IsCA, fuzzID)
	}
}
