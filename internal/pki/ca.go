package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/weftmesh/weft/internal/spiffe"
)

// File names LoadCADir understands.
const (
	// weft's own format: the CA certificate (with any issuers after it) and
	// its key.
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	// cert-manager's Secret format: tls.crt/tls.key are the CA, ca.crt (if
	// present) holds the roots above it.
	TLSCertFile = "tls.crt"
	TLSKeyFile  = "tls.key"
)

// CA signs workload certificates with one CA certificate and its key. It is
// immutable after ParseCA or LoadCADir and safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	// issued follows every leaf in the chains SignCSR returns: the signing
	// certificate, then the intermediates above it (never a self-signed
	// root other than the signing certificate itself).
	issued []*x509.Certificate
	// roots are the trust anchors: the root the signing certificate
	// chains to, plus the extra roots of a bundle.
	roots []*x509.Certificate
	// notAfter is the earliest expiry along the path a peer verifies;
	// no leaf may outlive it.
	notAfter time.Time
	// trustDomain is the trust domain named by the CA certificate's spiffe
	// URI SAN, or "" if it names none.
	trustDomain string
}

// ParseCA returns the CA of certPEM (the CA certificate first, optionally
// followed by the certificates that issued it, each signing the one before)
// and keyPEM (its private key: PKCS#8, SEC1 or PKCS#1; ECDSA P-256/P-384,
// RSA of at least 2048 bits, or Ed25519).
//
// Roots holds the last certificate of certPEM: the self-signed root, or,
// when the chain stops below a root that is kept offline, the highest
// certificate given, which then anchors trust itself.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	return parseCA(certPEM, keyPEM, nil)
}

// LoadCADir loads a CA from dir, which holds either cert-manager's tls.crt
// and tls.key (with an optional ca.crt bundle of roots: the issuer of
// tls.crt, and any roots added for a rotation), or weft's ca.crt and ca.key.
// tls.key takes precedence when both kinds are present. Roots holds every
// bundle root, and the top of tls.crt's chain too unless a bundle root
// signed it.
//
// A Kubernetes Secret volume swaps all its files at once, but reading two
// files can straddle a swap; the result is then an error (the certificate
// does not match the key), and reading again fixes it.
func LoadCADir(dir string) (*CA, error) {
	f, err := readCADir(dir)
	if err != nil {
		return nil, err
	}
	ca, err := parseCA(f.cert, f.key, f.bundle)
	if err != nil {
		return nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	return ca, nil
}

// caFiles are the contents of a CA directory.
type caFiles struct {
	cert, key []byte
	bundle    []byte // cert-manager's ca.crt; nil in weft's format or when absent
}

func readCADir(dir string) (caFiles, error) {
	var f caFiles
	key, err := os.ReadFile(filepath.Join(dir, TLSKeyFile))
	switch {
	case err == nil:
		f.key = key
		if f.cert, err = os.ReadFile(filepath.Join(dir, TLSCertFile)); err != nil {
			return caFiles{}, fmt.Errorf("read CA certificate: %w", err)
		}
		bundle, err := os.ReadFile(filepath.Join(dir, CACertFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return caFiles{}, fmt.Errorf("read CA bundle: %w", err)
		}
		f.bundle = bundle
		return f, nil
	case !errors.Is(err, os.ErrNotExist):
		return caFiles{}, fmt.Errorf("read CA key: %w", err)
	}
	if f.key, err = os.ReadFile(filepath.Join(dir, CAKeyFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return caFiles{}, fmt.Errorf("load CA from %s: neither %s nor %s exists", dir, TLSKeyFile, CAKeyFile)
		}
		return caFiles{}, fmt.Errorf("read CA key: %w", err)
	}
	if f.cert, err = os.ReadFile(filepath.Join(dir, CACertFile)); err != nil {
		return caFiles{}, fmt.Errorf("read CA certificate: %w", err)
	}
	return f, nil
}

func parseCA(certPEM, keyPEM, bundlePEM []byte) (*CA, error) {
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if len(chain) == 0 {
		return nil, errors.New("parse CA certificate: no PEM certificate block")
	}
	bundle, err := parseCertificates(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA bundle: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	cert := chain[0]
	if err := checkCACert(cert); err != nil {
		return nil, fmt.Errorf("check CA certificate %q: %w", cert.Subject, err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("check CA certificate %q: its public key does not match the private key", cert.Subject)
	}
	for i := 1; i < len(chain); i++ {
		if err := chain[i-1].CheckSignatureFrom(chain[i]); err != nil {
			return nil, fmt.Errorf("check CA chain: certificate %d (%q) is not signed by certificate %d (%q): %w", i-1, chain[i-1].Subject, i, chain[i].Subject, err)
		}
	}
	for i, b := range bundle {
		if !b.IsCA || !b.BasicConstraintsValid {
			return nil, fmt.Errorf("check CA bundle: certificate %d (%q) is not a CA", i, b.Subject)
		}
	}

	ca := &CA{cert: cert, key: key, notAfter: cert.NotAfter}
	for _, c := range chain {
		if c.NotAfter.Before(ca.notAfter) {
			ca.notAfter = c.NotAfter
		}
		if c == cert || !selfSigned(c) {
			ca.issued = append(ca.issued, c)
		}
	}
	top := chain[len(chain)-1]
	anchored := selfSigned(top)
	if !anchored {
		for _, b := range bundle {
			if top.CheckSignatureFrom(b) == nil {
				anchored = true
				if b.NotAfter.Before(ca.notAfter) {
					ca.notAfter = b.NotAfter
				}
				break
			}
		}
	}
	if !anchored || selfSigned(top) {
		ca.roots = append(ca.roots, top)
	}
	for _, b := range bundle {
		ca.roots = appendUnique(ca.roots, b)
	}
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			ca.trustDomain = u.Host
		}
	}
	return ca, nil
}

// checkCACert refuses a certificate that may not sign certificates.
func checkCACert(c *x509.Certificate) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return errors.New("not a CA certificate (basic constraints without CA:TRUE)")
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("key usage lacks certificate signing (keyCertSign)")
	}
	return nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func appendUnique(list []*x509.Certificate, c *x509.Certificate) []*x509.Certificate {
	for _, have := range list {
		if have.Equal(c) {
			return list
		}
	}
	return append(list, c)
}

// parseCertificates parses every PEM block of data, all of which must be
// certificates.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", len(certs), block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
}

// Certificate returns the signing CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// TrustDomain returns the trust domain the CA certificate names in a spiffe
// URI SAN (as GenerateRoot writes), or "" if it names none. A CA that names
// one signs only identities of that trust domain.
func (ca *CA) TrustDomain() string { return ca.trustDomain }

// Roots returns the trust anchors for certificates this CA signs, plus the
// extra roots of the bundle it was loaded with (e.g. the next root during a
// rotation). Callers must not modify the certificates.
func (ca *CA) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), ca.roots...)
}

// RootsPEM returns Roots as concatenated PEM certificates.
func (ca *CA) RootsPEM() []byte {
	return encodeCerts(ca.roots)
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// validateID refuses an id that spiffe.NewID would refuse, for callers that
// built the struct by hand.
func validateID(id spiffe.ID) error {
	_, err := spiffe.NewID(id.TrustDomain, id.Namespace, id.ServiceAccount)
	return err
}
