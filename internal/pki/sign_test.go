package pki

import (
	"bytes"
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/spiffe"
)

func TestSignCSRIssuesTheIdentity(t *testing.T) {
	ca, root, _ := newRoot(t)
	now := time.Now().Truncate(time.Second)
	tests := []struct {
		name      string
		key       crypto.Signer
		wantUsage x509.KeyUsage
	}{
		{name: "ECDSA P-256", key: ecKey(t, elliptic.P256()), wantUsage: x509.KeyUsageDigitalSignature},
		{name: "ECDSA P-384", key: ecKey(t, elliptic.P384()), wantUsage: x509.KeyUsageDigitalSignature},
		{name: "RSA 2048", key: rsaKey(t, 2048), wantUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{name: "Ed25519", key: edKey(t), wantUsage: x509.KeyUsageDigitalSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := NewCSR(tt.key, testID)
			if err != nil {
				t.Fatal(err)
			}
			chainPEM, err := ca.SignCSR(csr, testID, 24*time.Hour, now)
			if err != nil {
				t.Fatalf("SignCSR() = %v", err)
			}
			chain := parseChain(t, chainPEM)
			if len(chain) != 2 || !chain[1].Equal(root) {
				t.Fatalf("chain = %s, want [leaf, root]", subjects(chain))
			}
			leaf := chain[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != testID.String() {
				t.Errorf("URI SANs = %v, want [%s]", leaf.URIs, testID)
			}
			if n := len(leaf.DNSNames) + len(leaf.IPAddresses) + len(leaf.EmailAddresses); n != 0 {
				t.Errorf("leaf has %d other SANs, want 0", n)
			}
			if !leaf.BasicConstraintsValid || leaf.IsCA {
				t.Errorf("basic constraints valid=%v CA=%v, want valid and not a CA", leaf.BasicConstraintsValid, leaf.IsCA)
			}
			if leaf.KeyUsage != tt.wantUsage {
				t.Errorf("KeyUsage = %b, want %b", leaf.KeyUsage, tt.wantUsage)
			}
			if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ExtKeyUsage = %v, want [ServerAuth ClientAuth]", leaf.ExtKeyUsage)
			}
			if want := now.Add(-time.Minute); !leaf.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, want)
			}
			if want := now.Add(24 * time.Hour); !leaf.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %v, want %v", leaf.NotAfter, want)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v: want positive and at most 128 bits", leaf.SerialNumber)
			}
			if !publicKeysEqual(leaf.PublicKey, tt.key.Public()) {
				t.Error("leaf public key is not the CSR's")
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				id, _, err := spiffe.VerifyChain(rawChain(chain), pool(ca.Roots()...), "cluster.local", usage, now)
				if err != nil || id != testID {
					t.Errorf("VerifyChain(usage %v) = %v, %v; want %v", usage, id, err, testID)
				}
			}
		})
	}
}

func TestSignCSRLifetimeEndsWithTheCA(t *testing.T) {
	key := ecKey(t, elliptic.P256())
	tmpl := caTemplate("short root")
	tmpl.NotAfter = time.Now().Add(2 * time.Hour).Truncate(time.Second)
	root := issue(t, tmpl, key.Public(), nil, key)
	ca, err := ParseCA(certPEM(root), pkcs8PEM(t, key))
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseChain(t, mustSignFor(t, ca, 24*time.Hour, time.Now()))[0]
	if !leaf.NotAfter.Equal(root.NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", leaf.NotAfter, root.NotAfter)
	}
	if _, err := ca.SignCSR(mustCSR(t, testID), testID, time.Hour, root.NotAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "CA expired") {
		t.Errorf("SignCSR after the CA expired = %v, want a CA expired error", err)
	}
	if _, err := ca.SignCSR(mustCSR(t, testID), testID, time.Hour, root.NotBefore.Add(-time.Second)); err == nil || !strings.Contains(err.Error(), "not valid before") {
		t.Errorf("SignCSR before the CA is valid = %v, want a not valid before error", err)
	}
}

func TestSignCSRLifetimeEndsWithTheIntermediatesRoot(t *testing.T) {
	rootKey := ecKey(t, elliptic.P256())
	rootTmpl := caTemplate("root")
	rootTmpl.NotAfter = time.Now().Add(3 * time.Hour).Truncate(time.Second)
	root := issue(t, rootTmpl, rootKey.Public(), nil, rootKey)
	interKey := ecKey(t, elliptic.P256())
	inter := issue(t, caTemplate("intermediate"), interKey.Public(), root, rootKey)
	ca, err := ParseCA(certPEM(inter, root), pkcs8PEM(t, interKey))
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseChain(t, mustSignFor(t, ca, 24*time.Hour, time.Now()))[0]
	if !leaf.NotAfter.Equal(root.NotAfter) {
		t.Errorf("NotAfter = %v, want the root's %v", leaf.NotAfter, root.NotAfter)
	}
}

func mustSignFor(tb testing.TB, ca *CA, lifetime time.Duration, now time.Time) []byte {
	tb.Helper()
	chain, err := ca.SignCSR(mustCSR(tb, testID), testID, lifetime, now)
	if err != nil {
		tb.Fatalf("SignCSR() = %v", err)
	}
	return chain
}

func TestSignCSRSerialsDiffer(t *testing.T) {
	ca, _, _ := newRoot(t)
	csr := mustCSR(t, testID)
	seen := map[string]bool{}
	for range 100 {
		chain, err := ca.SignCSR(csr, testID, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		s := parseChain(t, chain)[0].SerialNumber.String()
		if seen[s] {
			t.Fatalf("serial %s issued twice", s)
		}
		seen[s] = true
	}
}

func TestSignCSRRefusesBadCSRs(t *testing.T) {
	ca, _, _ := newRoot(t)
	key := ecKey(t, elliptic.P256())
	good := mustCSR(t, testID)
	id := testID.String()

	badSig := func() []byte {
		block, _ := pem.Decode(good)
		der := bytes.Clone(block.Bytes)
		der[len(der)-1] ^= 0xff
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	basicConstraints := func(isCA bool) pkix.Extension {
		v, err := asn1.Marshal(struct {
			IsCA bool `asn1:"optional"`
		}{isCA})
		if err != nil {
			t.Fatal(err)
		}
		return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: v}
	}
	otherNameSAN := func() pkix.Extension {
		upn, _ := asn1.Marshal("admin@example.com")
		oid, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3})
		value, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: upn})
		names, err := asn1.Marshal([]asn1.RawValue{
			{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(id)},
			{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, value...)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: names}
	}

	tests := []struct {
		name    string
		csr     []byte
		wantErr string
	}{
		{name: "empty", csr: nil, wantErr: "no PEM block"},
		{name: "not PEM", csr: []byte("hello"), wantErr: "no PEM block"},
		{name: "wrong PEM type", csr: certPEM(ca.Certificate()), wantErr: `"CERTIFICATE", want CERTIFICATE REQUEST`},
		{name: "garbage DER", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), wantErr: "invalid CSR"},
		{name: "trailing data", csr: append(bytes.Clone(good), good...), wantErr: "data after the PEM block"},
		{name: "bad signature", csr: badSig, wantErr: "check signature"},
		{name: "weak RSA key", csr: csrFor(t, rsaKey(t, 1024), &x509.CertificateRequest{URIs: uris(id)}), wantErr: "RSA key of 1024 bits"},
		{name: "P-224 key", csr: csrFor(t, ecKey(t, elliptic.P224()), &x509.CertificateRequest{URIs: uris(id)}), wantErr: "curve P-224"},
		{name: "another identity", csr: mustCSR(t, spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "admin"}), wantErr: `asks for "spiffe://cluster.local/ns/shop/sa/admin"`},
		{name: "no URI SAN", csr: csrFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cart"}}), wantErr: "has 0 URI SANs"},
		{name: "two URI SANs", csr: csrFor(t, key, &x509.CertificateRequest{URIs: uris(id, "spiffe://cluster.local/ns/shop/sa/admin")}), wantErr: "has 2 URI SANs"},
		{name: "the identity twice", csr: csrFor(t, key, &x509.CertificateRequest{URIs: uris(id, id)}), wantErr: "has 2 URI SANs"},
		{name: "DNS SAN", csr: csrFor(t, key, &x509.CertificateRequest{URIs: uris(id), DNSNames: []string{"cart.shop.svc"}}), wantErr: "DNS, IP or e-mail"},
		{name: "IP SAN", csr: csrFor(t, key, &x509.CertificateRequest{URIs: uris(id), IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), wantErr: "DNS, IP or e-mail"},
		{name: "e-mail SAN", csr: csrFor(t, key, &x509.CertificateRequest{URIs: uris(id), EmailAddresses: []string{"a@b.c"}}), wantErr: "DNS, IP or e-mail"},
		{name: "otherName SAN", csr: csrFor(t, key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{otherNameSAN()}}), wantErr: "asks for 2 SANs"},
		{name: "CA:TRUE", csr: csrFor(t, key, &x509.CertificateRequest{URIs: uris(id), ExtraExtensions: []pkix.Extension{basicConstraints(true)}}), wantErr: "asks to be a CA"},
		{name: "URI with a query", csr: csrFor(t, key, &x509.CertificateRequest{URIs: uris(id + "?x=1")}), wantErr: "asks for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := ca.SignCSR(tt.csr, testID, time.Hour, time.Now())
			if !errors.Is(err, ErrInvalidCSR) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SignCSR() = %d bytes, %v; want an error wrapping ErrInvalidCSR containing %q", len(chain), err, tt.wantErr)
			}
			if chain != nil {
				t.Errorf("SignCSR() returned %d bytes with its error", len(chain))
			}
		})
	}

	// A request that is only explicit about CA:FALSE asks for nothing more.
	ok := csrFor(t, key, &x509.CertificateRequest{URIs: uris(id), ExtraExtensions: []pkix.Extension{basicConstraints(false)}})
	if _, err := ca.SignCSR(ok, testID, time.Hour, time.Now()); err != nil {
		t.Errorf("SignCSR(CA:FALSE) = %v, want success", err)
	}
}

func TestSignCSRRefusesBadRequests(t *testing.T) {
	ca, _, _ := newRoot(t)
	csr := mustCSR(t, testID)
	other := spiffe.ID{TrustDomain: "example.org", Namespace: "shop", ServiceAccount: "cart"}
	tests := []struct {
		name     string
		csr      []byte
		id       spiffe.ID
		lifetime time.Duration
		wantErr  string
	}{
		{name: "zero id", csr: csr, lifetime: time.Hour, wantErr: "invalid SPIFFE ID"},
		{name: "invalid id", csr: csr, id: spiffe.ID{TrustDomain: "cluster.local", Namespace: "Shop", ServiceAccount: "cart"}, lifetime: time.Hour, wantErr: "invalid SPIFFE ID"},
		{name: "another trust domain", csr: mustCSR(t, other), id: other, lifetime: time.Hour, wantErr: `serves trust domain "cluster.local"`},
		{name: "zero lifetime", csr: csr, id: testID, wantErr: "lifetime 0s is not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.SignCSR(tt.csr, tt.id, tt.lifetime, time.Now())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SignCSR() = %v, want an error containing %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrInvalidCSR) {
				t.Errorf("SignCSR() = %v: wraps ErrInvalidCSR, but the CSR is fine", err)
			}
		})
	}
}

func TestNewCSR(t *testing.T) {
	key := ecKey(t, elliptic.P256())
	csrPEM, err := NewCSR(key, testID)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := parseCSR(csrPEM, testID)
	if err != nil {
		t.Fatalf("parseCSR(NewCSR()) = %v, want a CSR SignCSR accepts", err)
	}
	if !publicKeysEqual(csr.PublicKey, key.Public()) {
		t.Error("CSR public key is not the key's")
	}
	if !bytes.Contains(csr.RawTBSCertificateRequest, []byte(testID.String())) {
		t.Error("CSR does not name the identity")
	}
	if _, err := NewCSR(key, spiffe.ID{}); !errors.Is(err, spiffe.ErrInvalidID) {
		t.Errorf("NewCSR(zero id) = %v, want ErrInvalidID", err)
	}
}

func TestGenerateRoot(t *testing.T) {
	certPEM, keyPEM, err := GenerateRoot("example.org", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("ParseCA(GenerateRoot()) = %v", err)
	}
	c := ca.Certificate()
	if !selfSigned(c) || !c.IsCA {
		t.Error("generated root is not a self-signed CA")
	}
	if ca.TrustDomain() != "example.org" {
		t.Errorf("TrustDomain() = %q, want example.org", ca.TrustDomain())
	}
	if got := c.NotAfter.Sub(c.NotBefore); got != 48*time.Hour+time.Minute {
		t.Errorf("validity = %v, want 48h1m", got)
	}
	if block, _ := pem.Decode(keyPEM); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("key PEM is not PKCS#8")
	}
	other, _, err := GenerateRoot("example.org", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other, certPEM) {
		t.Error("two generated roots are identical")
	}
	for _, td := range []string{"", "Example.org", "a:80"} {
		if _, _, err := GenerateRoot(td, time.Hour); err == nil {
			t.Errorf("GenerateRoot(%q) succeeded, want an error", td)
		}
	}
	if _, _, err := GenerateRoot("example.org", 0); err == nil {
		t.Error("GenerateRoot(lifetime 0) succeeded, want an error")
	}
}

// TestCSRHoldsNoPrivateKey: what leaves the node is the public key only.
func TestCSRHoldsNoPrivateKey(t *testing.T) {
	key := ecKey(t, elliptic.P256())
	csrPEM, err := NewCSR(key, testID)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csrPEM)
	d, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(block.Bytes, d) {
		t.Fatal("the CSR contains the private scalar")
	}
}
