package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

// writeFiles replaces files in dir one by one, each atomically (as a
// Secret volume's individual files appear).
func writeFiles(tb testing.TB, dir string, files map[string][]byte) {
	tb.Helper()
	for name, data := range files {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			tb.Fatal(err)
		}
	}
}

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

func parsePEMChain(tb testing.TB, chainPEM []byte) []*x509.Certificate {
	tb.Helper()
	var certs []*x509.Certificate
	for rest := chainPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			tb.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		tb.Fatal("empty chain")
	}
	return certs
}

func TestFileSigner(t *testing.T) {
	ctx := context.Background()
	ca1, ca2 := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	s := NewFileSigner(dir, 6*time.Hour)

	if _, err := s.Sign(ctx, newCSR(t, idServer), idServer); err == nil || !strings.Contains(err.Error(), "neither tls.key nor ca.key") {
		t.Errorf("Sign() on an empty directory = %v, want an error naming the missing files", err)
	}

	writeFiles(t, dir, map[string][]byte{"ca.crt": ca1.certPEM, "ca.key": ca1.keyPEM})
	before := time.Now()
	chain := parsePEMChain(t, mustSignWith(t, s, idServer))
	if !chain[1].Equal(ca1.cert) {
		t.Errorf("chain[1] = %q, want the directory's CA", chain[1].Subject)
	}
	if got := chain[0].NotAfter.Sub(before); got < 6*time.Hour-time.Second || got > 6*time.Hour+time.Minute {
		t.Errorf("lifetime = %v, want 6h", got)
	}
	roots, err := s.Roots()
	if err != nil || len(roots) != 1 || !roots[0].Equal(ca1.cert) {
		t.Errorf("Roots() = %d roots, %v; want the directory's CA", len(roots), err)
	}

	// The CA is replaced in place: the next signing uses the new one.
	writeFiles(t, dir, map[string][]byte{"ca.crt": ca2.certPEM, "ca.key": ca2.keyPEM})
	if chain := parsePEMChain(t, mustSignWith(t, s, idServer)); !chain[1].Equal(ca2.cert) {
		t.Errorf("after replacing the CA, chain[1] = %q, want the new CA", chain[1].Subject)
	}

	// Half a swap: the old CA must not be used either.
	writeFiles(t, dir, map[string][]byte{"ca.key": ca1.keyPEM})
	if _, err := s.Sign(ctx, newCSR(t, idServer), idServer); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("Sign() with a mismatched directory = %v, want a mismatch error", err)
	}
	if _, err := s.Roots(); err == nil {
		t.Error("Roots() with a mismatched directory = nil error, want an error")
	}
	writeFiles(t, dir, map[string][]byte{"ca.key": ca2.keyPEM})

	if _, err := s.Sign(ctx, []byte("junk"), idServer); !errors.Is(err, pki.ErrInvalidCSR) {
		t.Errorf("Sign(junk) = %v, want ErrInvalidCSR", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Sign(cancelled, newCSR(t, idServer), idServer); !errors.Is(err, context.Canceled) {
		t.Errorf("Sign(cancelled) = %v, want context.Canceled", err)
	}
}

func mustSignWith(tb testing.TB, s Signer, id spiffe.ID) []byte {
	tb.Helper()
	chain, err := s.Sign(context.Background(), newCSR(tb, id), id)
	if err != nil {
		tb.Fatalf("Sign(%s) = %v", id, err)
	}
	return chain
}

// TestCARotationThroughTheDirectory follows a root rotation of the
// cert-manager Secret: the new root joins ca.crt, then signs, then the old
// root leaves. While both are in the bundle, certificates of either verify.
func TestCARotationThroughTheDirectory(t *testing.T) {
	oldCA, newCA := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string][]byte{"tls.crt": oldCA.certPEM, "tls.key": oldCA.keyPEM, "ca.crt": oldCA.certPEM})
	fs := NewFileSigner(dir, 24*time.Hour)
	m := NewManager(fs, fs, Options{Poll: 5 * time.Millisecond}, testLogger(t))
	startRun(t, m)
	mustAcquire(t, m, idServer, idClient)

	verifies := func(c *x509.Certificate) bool {
		_, _, err := spiffe.VerifyChain([][]byte{c.Raw}, m.Roots(), "cluster.local", x509.ExtKeyUsageClientAuth, time.Now())
		return err == nil
	}
	underNew := newCA.leaf(t, idOther, time.Now(), time.Hour).Leaf
	if verifies(underNew) {
		t.Fatal("a certificate of the new root verifies before the rotation started")
	}

	// 1. The new root joins the bundle.
	writeFiles(t, dir, map[string][]byte{"ca.crt": append(append([]byte(nil), oldCA.certPEM...), newCA.certPEM...)})
	waitFor(t, "the new root in Roots()", func() bool { return verifies(underNew) })

	// 2. The new root signs; the client gets a certificate from it.
	writeFiles(t, dir, map[string][]byte{"tls.crt": newCA.certPEM, "tls.key": newCA.keyPEM})
	m.Release(idClient)
	mustAcquire(t, m, idClient)
	serverCert, _ := m.Certificate(idServer)
	clientCert, _ := m.Certificate(idClient)
	if err := serverCert.Leaf.CheckSignatureFrom(oldCA.cert); err != nil {
		t.Fatalf("server certificate not from the old root: %v", err)
	}
	if err := clientCert.Leaf.CheckSignatureFrom(newCA.cert); err != nil {
		t.Fatalf("client certificate issued after the switch not from the new root: %v", err)
	}
	for name, c := range map[string]*x509.Certificate{"old root's": serverCert.Leaf, "new root's": clientCert.Leaf} {
		if !verifies(c) {
			t.Errorf("the %s certificate does not verify while both roots are in the bundle", name)
		}
	}
	server, client := handshake(t, m.ServerConfig(idServer), m.ClientConfig(idClient, idServer))
	if server.err != nil || client.err != nil {
		t.Fatalf("handshake between the old and the new root's certificates: server %v, client %v; want success", server.err, client.err)
	}

	// 3. The old root leaves; its certificates stop verifying.
	writeFiles(t, dir, map[string][]byte{"ca.crt": newCA.certPEM})
	waitFor(t, "the old root gone from Roots()", func() bool { return !verifies(serverCert.Leaf) })
	server, client = handshake(t, m.ServerConfig(idServer), m.ClientConfig(idClient, idServer))
	if !errors.Is(client.err, spiffe.ErrUntrusted) {
		t.Errorf("handshake with a certificate of the retired root: client %v, want ErrUntrusted", client.err)
	}
	m.Release(idServer)
	mustAcquire(t, m, idServer)
	server, client = handshake(t, m.ServerConfig(idServer), m.ClientConfig(idClient, idServer))
	if server.err != nil || client.err != nil {
		t.Errorf("handshake after the rotation: server %v, client %v; want success", server.err, client.err)
	}
}
