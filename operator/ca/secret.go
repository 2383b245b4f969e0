package ca

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/weftmesh/weft/internal/pki"
)

// Keys of the CA Secret besides pki's ca.crt/ca.key (weft's format) and
// tls.crt/tls.key/ca.crt (cert-manager's).
const (
	// ExtraRootsKey holds PEM roots the trust bundle carries besides the
	// CA's own, in either format: the next root of a rotation staged ahead
	// of the switch, or the previous one kept after it.
	ExtraRootsKey = "extra-roots.crt"
)

// Secret formats, for logs.
const (
	formatWeft        = "weft (ca.crt, ca.key)"
	formatCertManager = "cert-manager (tls.crt, tls.key, ca.crt)"
)

// fingerprint identifies a certificate by the SHA-256 of its DER.
type fingerprint [sha256.Size]byte

func fingerprintOf(c *x509.Certificate) fingerprint { return sha256.Sum256(c.Raw) }

// material is one CA as the Secret describes it. It is immutable.
type material struct {
	ca *pki.CA
	// key signs what pki does not issue (the CSR service's own serving
	// certificate); chain is what follows such a leaf: the signing
	// certificate and the intermediates above it, as DER.
	key   crypto.Signer
	chain [][]byte
	// notAfter is the earliest expiry on the path to the anchors.
	notAfter time.Time
	// anchors are the roots the signing certificate chains to: what a peer
	// needs to verify a certificate this CA signs.
	anchors []*x509.Certificate
	// roots are every root the Secret lists: the anchors, cert-manager's
	// ca.crt bundle and ExtraRootsKey.
	roots  []*x509.Certificate
	format string
}

// signs reports whether m and o sign with the same certificate.
func (m *material) signs(o *material) bool {
	return m.ca.Certificate().Equal(o.ca.Certificate())
}

// parseSecret reads a CA from a Secret's data: cert-manager's tls.crt and
// tls.key (with ca.crt as the bundle of roots above tls.crt) when tls.key is
// present, else weft's ca.crt (the CA certificate, then any issuers) and
// ca.key. Either may add ExtraRootsKey.
func parseSecret(data map[string][]byte) (*material, error) {
	var certPEM, keyPEM, bundlePEM []byte
	format := formatWeft
	switch {
	case len(data[pki.TLSKeyFile]) > 0:
		format = formatCertManager
		certPEM, keyPEM, bundlePEM = data[pki.TLSCertFile], data[pki.TLSKeyFile], data[pki.CACertFile]
	case len(data[pki.CAKeyFile]) > 0:
		certPEM, keyPEM = data[pki.CACertFile], data[pki.CAKeyFile]
	default:
		return nil, fmt.Errorf("parse CA: neither %s nor %s is set", pki.TLSKeyFile, pki.CAKeyFile)
	}
	chain, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if len(chain) == 0 {
		return nil, errors.New("parse CA certificate: no PEM certificate block")
	}
	bundle, err := parseRoots(pki.CACertFile, bundlePEM)
	if err != nil {
		return nil, err
	}
	extra, err := parseRoots(ExtraRootsKey, data[ExtraRootsKey])
	if err != nil {
		return nil, err
	}

	// pki.ParseCA anchors trust at the top of the chain it is given. When
	// a bundle root issued the top of tls.crt, hand pki that root too, so
	// the CA anchors there (and no leaf outlives it), as pki.LoadCADir does.
	top := chain[len(chain)-1]
	caPEM := certPEM
	if !selfSigned(top) {
		for _, b := range bundle {
			if selfSigned(b) && top.CheckSignatureFrom(b) == nil {
				caPEM = append(append(bytes.Clone(certPEM), '\n'), encodeCerts([]*x509.Certificate{b})...)
				chain = append(chain, b)
				break
			}
		}
	}
	ca, err := pki.ParseCA(caPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	// pki checked that the key matches the certificate; the TLS parser
	// hands it out as a signer.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse CA key: key of type %T cannot sign", pair.PrivateKey)
	}

	m := &material{ca: ca, key: key, notAfter: ca.Certificate().NotAfter, anchors: ca.Roots(), format: format}
	for i, c := range chain {
		// The same chain pki puts after a workload leaf.
		if i == 0 || !selfSigned(c) {
			m.chain = append(m.chain, c.Raw)
		}
		if c.NotAfter.Before(m.notAfter) {
			m.notAfter = c.NotAfter
		}
	}
	m.roots = appendUnique(nil, m.anchors...)
	m.roots = appendUnique(m.roots, bundle...)
	m.roots = appendUnique(m.roots, extra...)
	return m, nil
}

// generateSecretData returns the data of a new Secret in weft's format: a
// generated root for trustDomain.
func generateSecretData(trustDomain string, lifetime time.Duration) (map[string][]byte, error) {
	certPEM, keyPEM, err := pki.GenerateRoot(trustDomain, lifetime)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{pki.CACertFile: certPEM, pki.CAKeyFile: keyPEM}, nil
}

// parseRoots parses the PEM certificates of Secret key name, all of which
// must be CAs: a leaf as a trust anchor would let whoever holds its key
// claim any identity.
func parseRoots(name string, data []byte) ([]*x509.Certificate, error) {
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", name, err)
	}
	for i, c := range certs {
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("parse %s: certificate %d (%q) is not a CA", name, i, c.Subject)
		}
	}
	return certs, nil
}

// parseCerts parses every PEM block of data, all of which must be
// certificates.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			if len(bytes.TrimSpace(data)) != 0 && len(certs) == 0 {
				return nil, errors.New("no PEM block")
			}
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

func encodeCerts(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, have := range list {
		if have.Equal(c) {
			return true
		}
	}
	return false
}

func appendUnique(list []*x509.Certificate, certs ...*x509.Certificate) []*x509.Certificate {
	for _, c := range certs {
		if !containsCert(list, c) {
			list = append(list, c)
		}
	}
	return list
}
