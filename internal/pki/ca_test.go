package pki

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/spiffe"
)

func TestParseCA(t *testing.T) {
	p256 := ecKey(t, elliptic.P256())
	p384 := ecKey(t, elliptic.P384())
	p224 := ecKey(t, elliptic.P224())
	rsa2048 := rsaKey(t, 2048)
	rsa1024 := rsaKey(t, 1024)
	ed := edKey(t)
	other := ecKey(t, elliptic.P256())

	selfSigned := func(key crypto.Signer) []byte {
		return certPEM(issue(t, caTemplate("root"), key.Public(), nil, key))
	}
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	sec1P384 := mustSEC1(t, p384)
	sec1P256 := mustSEC1(t, p256)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsa2048)})

	leafTmpl := caTemplate("leaf")
	leafTmpl.IsCA = false
	leafTmpl.KeyUsage = x509.KeyUsageDigitalSignature
	noCertSign := caTemplate("no-certsign")
	noCertSign.KeyUsage = x509.KeyUsageCRLSign

	tests := []struct {
		name    string
		cert    []byte
		key     []byte
		wantErr string // "" for success
	}{
		{name: "ECDSA P-256 PKCS#8", cert: selfSigned(p256), key: pkcs8PEM(t, p256)},
		{name: "ECDSA P-384 SEC1", cert: selfSigned(p384), key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1P384})},
		{name: "SEC1 after EC PARAMETERS", cert: selfSigned(p256), key: append(ecParams, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1P256})...)},
		{name: "RSA 2048 PKCS#1", cert: selfSigned(rsa2048), key: pkcs1},
		{name: "RSA 2048 PKCS#8", cert: selfSigned(rsa2048), key: pkcs8PEM(t, rsa2048)},
		{name: "Ed25519 PKCS#8", cert: selfSigned(ed), key: pkcs8PEM(t, ed)},
		{name: "key does not match", cert: selfSigned(p256), key: pkcs8PEM(t, other), wantErr: "does not match the private key"},
		{name: "not a CA", cert: certPEM(issue(t, leafTmpl, p256.Public(), nil, p256)), key: pkcs8PEM(t, p256), wantErr: "not a CA certificate"},
		{name: "no cert signing usage", cert: certPEM(issue(t, noCertSign, p256.Public(), nil, p256)), key: pkcs8PEM(t, p256), wantErr: "lacks certificate signing"},
		{name: "weak RSA key", cert: selfSigned(rsa1024), key: pkcs8PEM(t, rsa1024), wantErr: "RSA key of 1024 bits"},
		{name: "P-224 key", cert: selfSigned(p224), key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: mustSEC1(t, p224)}), wantErr: "curve P-224"},
		{name: "encrypted key", cert: selfSigned(p256), key: pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), wantErr: "encrypted"},
		{name: "no key", cert: selfSigned(p256), key: []byte("not pem"), wantErr: "no PEM private key block"},
		{name: "garbage key", cert: selfSigned(p256), key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), wantErr: "parse PRIVATE KEY"},
		{name: "certificate as key", cert: selfSigned(p256), key: selfSigned(p256), wantErr: `"CERTIFICATE" is not a private key`},
		{name: "no certificate", cert: nil, key: pkcs8PEM(t, p256), wantErr: "no PEM certificate block"},
		{name: "key in certificate file", cert: pkcs8PEM(t, p256), key: pkcs8PEM(t, p256), wantErr: `is "PRIVATE KEY", want CERTIFICATE`},
		{name: "issuer does not sign", cert: append(selfSigned(p256), selfSigned(other)...), key: pkcs8PEM(t, p256), wantErr: "is not signed by certificate 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := ParseCA(tt.cert, tt.key)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseCA() = %v, want success", err)
				}
				// Every accepted CA must actually sign.
				chain, err := ca.SignCSR(mustCSR(t, testID), testID, time.Hour, time.Now())
				if err != nil {
					t.Fatalf("SignCSR() = %v, want success", err)
				}
				if _, _, err := spiffe.VerifyChain(rawChain(parseChain(t, chain)), pool(ca.Roots()...), "cluster.local", x509.ExtKeyUsageServerAuth, time.Now()); err != nil {
					t.Errorf("VerifyChain(issued) = %v, want success", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseCA() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadCADir(t *testing.T) {
	rootKey := ecKey(t, elliptic.P256())
	root := issue(t, caTemplate("root"), rootKey.Public(), nil, rootKey)
	nextKey := ecKey(t, elliptic.P256())
	next := issue(t, caTemplate("next root"), nextKey.Public(), nil, nextKey)
	interKey := ecKey(t, elliptic.P256())
	inter := issue(t, caTemplate("intermediate"), interKey.Public(), root, rootKey)
	leafTmpl := caTemplate("leaf")
	leafTmpl.IsCA = false
	leafTmpl.KeyUsage = x509.KeyUsageDigitalSignature
	leaf := issue(t, leafTmpl, rootKey.Public(), root, rootKey)

	tests := []struct {
		name      string
		files     map[string][]byte
		wantCert  *x509.Certificate   // the signing certificate
		wantRoots []*x509.Certificate // in order
		wantChain []*x509.Certificate // after the leaf
		wantErr   string
	}{
		{
			name:      "weft format",
			files:     map[string][]byte{"ca.crt": certPEM(root), "ca.key": pkcs8PEM(t, rootKey)},
			wantCert:  root,
			wantRoots: []*x509.Certificate{root},
			wantChain: []*x509.Certificate{root},
		},
		{
			name:      "cert-manager self-signed, ca.crt repeats tls.crt",
			files:     map[string][]byte{"tls.crt": certPEM(root), "tls.key": pkcs8PEM(t, rootKey), "ca.crt": certPEM(root)},
			wantCert:  root,
			wantRoots: []*x509.Certificate{root},
			wantChain: []*x509.Certificate{root},
		},
		{
			name:      "cert-manager without ca.crt",
			files:     map[string][]byte{"tls.crt": certPEM(root), "tls.key": pkcs8PEM(t, rootKey)},
			wantCert:  root,
			wantRoots: []*x509.Certificate{root},
			wantChain: []*x509.Certificate{root},
		},
		{
			name:      "cert-manager with the next root in ca.crt",
			files:     map[string][]byte{"tls.crt": certPEM(root), "tls.key": pkcs8PEM(t, rootKey), "ca.crt": certPEM(root, next)},
			wantCert:  root,
			wantRoots: []*x509.Certificate{root, next},
			wantChain: []*x509.Certificate{root},
		},
		{
			name:      "cert-manager intermediate issued by the ca.crt root",
			files:     map[string][]byte{"tls.crt": certPEM(inter), "tls.key": pkcs8PEM(t, interKey), "ca.crt": certPEM(root)},
			wantCert:  inter,
			wantRoots: []*x509.Certificate{root},
			wantChain: []*x509.Certificate{inter},
		},
		{
			name:      "intermediate followed by its root in tls.crt",
			files:     map[string][]byte{"tls.crt": certPEM(inter, root), "tls.key": pkcs8PEM(t, interKey)},
			wantCert:  inter,
			wantRoots: []*x509.Certificate{root},
			wantChain: []*x509.Certificate{inter},
		},
		{
			name:      "intermediate alone anchors trust itself",
			files:     map[string][]byte{"ca.crt": certPEM(inter), "ca.key": pkcs8PEM(t, interKey)},
			wantCert:  inter,
			wantRoots: []*x509.Certificate{inter},
			wantChain: []*x509.Certificate{inter},
		},
		{
			name: "tls.key wins over ca.key",
			files: map[string][]byte{
				"tls.crt": certPEM(next), "tls.key": pkcs8PEM(t, nextKey),
				"ca.crt": certPEM(root), "ca.key": pkcs8PEM(t, rootKey),
			},
			wantCert:  next,
			wantRoots: []*x509.Certificate{next, root},
			wantChain: []*x509.Certificate{next},
		},
		{name: "empty directory", files: nil, wantErr: "neither tls.key nor ca.key exists"},
		{name: "tls.key without tls.crt", files: map[string][]byte{"tls.key": pkcs8PEM(t, rootKey)}, wantErr: "read CA certificate"},
		{name: "ca.key without ca.crt", files: map[string][]byte{"ca.key": pkcs8PEM(t, rootKey)}, wantErr: "read CA certificate"},
		{name: "leaf in the bundle", files: map[string][]byte{"tls.crt": certPEM(root), "tls.key": pkcs8PEM(t, rootKey), "ca.crt": certPEM(leaf)}, wantErr: "certificate 0 (\"CN=leaf\") is not a CA"},
		{name: "mismatched files mid-rotation", files: map[string][]byte{"tls.crt": certPEM(next), "tls.key": pkcs8PEM(t, rootKey)}, wantErr: "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ca, err := LoadCADir(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadCADir() = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadCADir() = %v, want success", err)
			}
			if !ca.Certificate().Equal(tt.wantCert) {
				t.Errorf("Certificate() = %q, want %q", ca.Certificate().Subject, tt.wantCert.Subject)
			}
			if got := subjects(ca.Roots()); got != subjects(tt.wantRoots) {
				t.Errorf("Roots() = %s, want %s", got, subjects(tt.wantRoots))
			}
			rootsPEM, err := parseCertificates(ca.RootsPEM())
			if err != nil || subjects(rootsPEM) != subjects(tt.wantRoots) {
				t.Errorf("RootsPEM() = %s (%v), want %s", subjects(rootsPEM), err, subjects(tt.wantRoots))
			}
			chain := parseChain(t, mustSign(t, ca, testID))
			if got := subjects(chain[1:]); got != subjects(tt.wantChain) {
				t.Errorf("issued chain after the leaf = %s, want %s", got, subjects(tt.wantChain))
			}
			if _, _, err := spiffe.VerifyChain(rawChain(chain), pool(ca.Roots()...), "cluster.local", x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
				t.Errorf("VerifyChain(issued, Roots()) = %v, want success", err)
			}
		})
	}
}

func TestRootsAreACopy(t *testing.T) {
	ca, _, _ := newRoot(t)
	r := ca.Roots()
	r[0] = nil
	if ca.Roots()[0] == nil {
		t.Fatal("changing the slice Roots returned changed the CA's roots")
	}
}

func subjects(certs []*x509.Certificate) string {
	var names []string
	for _, c := range certs {
		names = append(names, c.Subject.CommonName)
	}
	return "[" + strings.Join(names, ", ") + "]"
}

func mustSign(tb testing.TB, ca *CA, id spiffe.ID) []byte {
	tb.Helper()
	chain, err := ca.SignCSR(mustCSR(tb, id), id, time.Hour, time.Now())
	if err != nil {
		tb.Fatalf("SignCSR(%s) = %v", id, err)
	}
	return chain
}
