package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/weftmesh/weft/internal/spiffe"
)

// ErrInvalidCSR is wrapped by every SignCSR error caused by the CSR itself:
// it does not parse, its signature is wrong, its key is weak, or it asks for
// more or other than the identity being signed. A CSR service answers these
// with "invalid argument"; other errors are the CA's.
var ErrInvalidCSR = errors.New("invalid CSR")

// backdate covers small clock differences between the CA and the peers
// that verify a fresh certificate.
const backdate = time.Minute

var (
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
)

// SignCSR verifies csrPEM (one PEM "CERTIFICATE REQUEST") and returns the
// chain, leaf first and then the CA certificates above it, of a workload
// certificate for id: exactly one URI SAN (id), no other names, not a CA,
// usable for TLS client and server authentication, valid from now-1m to
// now+lifetime or the CA's own expiry, whichever is first.
//
// Nothing but the public key is taken from the CSR, and a CSR that asks for
// anything but id (another URI, DNS names, IP addresses, e-mail addresses,
// CA:TRUE) is refused with an error wrapping ErrInvalidCSR: a requester that
// asks for more than it may have is broken or hostile, and saying so beats
// silently issuing less.
func (ca *CA) SignCSR(csrPEM []byte, id spiffe.ID, lifetime time.Duration, now time.Time) ([]byte, error) {
	if err := validateID(id); err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	if ca.trustDomain != "" && id.TrustDomain != ca.trustDomain {
		return nil, fmt.Errorf("sign certificate for %s: the CA serves trust domain %q", id, ca.trustDomain)
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("sign certificate for %s: lifetime %v is not positive", id, lifetime)
	}
	if now.Before(ca.cert.NotBefore) {
		return nil, fmt.Errorf("sign certificate for %s: the CA certificate is not valid before %s", id, ca.cert.NotBefore.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(lifetime)
	if ca.notAfter.Before(notAfter) {
		notAfter = ca.notAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("sign certificate for %s: the CA expired at %s", id, ca.notAfter.UTC().Format(time.RFC3339))
	}
	csr, err := parseCSR(csrPEM, id)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := csr.PublicKey.(*rsa.PublicKey); ok {
		// TLS 1.3 never encrypts to the key, but RSA verifiers built for
		// older TLS still expect the bit.
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	var out bytes.Buffer
	// Writing to a bytes.Buffer cannot fail.
	_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	out.Write(encodeCerts(ca.issued))
	return out.Bytes(), nil
}

// parseCSR returns the CSR in csrPEM if it is well formed, correctly signed,
// has an allowed key, and asks for exactly id and nothing more.
func parseCSR(csrPEM []byte, id spiffe.ID) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(csrPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrInvalidCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrInvalidCSR, block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the PEM block", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: check signature: %w", ErrInvalidCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if n := len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n != 0 {
		return nil, fmt.Errorf("%w: asks for %d DNS, IP or e-mail names; a workload certificate carries only its SPIFFE ID", ErrInvalidCSR, n)
	}
	switch {
	case len(csr.URIs) != 1:
		return nil, fmt.Errorf("%w: has %d URI SANs, want exactly 1 (%s)", ErrInvalidCSR, len(csr.URIs), id)
	case csr.URIs[0].String() != id.String():
		return nil, fmt.Errorf("%w: asks for %q, want %s", ErrInvalidCSR, csr.URIs[0].String(), id)
	}
	names := 0
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidSubjectAltName):
			// crypto/x509 drops the SAN kinds it does not model (otherName,
			// directoryName, registeredID ...); count them all.
			var general []asn1.RawValue
			if _, err := asn1.Unmarshal(ext.Value, &general); err != nil {
				return nil, fmt.Errorf("%w: parse requested SANs: %w", ErrInvalidCSR, err)
			}
			names += len(general)
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
				return nil, fmt.Errorf("%w: parse requested basic constraints: %w", ErrInvalidCSR, err)
			}
			if bc.IsCA {
				return nil, fmt.Errorf("%w: asks to be a CA", ErrInvalidCSR)
			}
		}
	}
	if names != 1 {
		return nil, fmt.Errorf("%w: asks for %d SANs, want exactly 1 (%s)", ErrInvalidCSR, names, id)
	}
	return csr, nil
}

// randomSerial returns a random positive 128-bit serial number: unique
// without coordination between CA replicas, and unpredictable.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// NewCSR returns a PEM CSR for id signed by key: its only name is id's URI
// SAN, and it carries nothing of key but the public half.
func NewCSR(key crypto.Signer, id spiffe.ID) ([]byte, error) {
	if err := validateID(id); err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// GenerateRoot returns a new self-signed ECDSA P-256 root for trustDomain,
// valid from a minute ago for lifetime, and its PKCS#8 key, both PEM. The
// root names the trust domain in a spiffe URI SAN, so a CA loaded from it
// refuses to sign identities of other trust domains.
func GenerateRoot(trustDomain string, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	// The namespace and service account only make the ID complete enough
	// to validate the trust domain with spiffe's rules.
	if _, err := spiffe.NewID(trustDomain, "default", "default"); err != nil {
		return nil, nil, fmt.Errorf("generate root: %w", err)
	}
	if lifetime <= 0 {
		return nil, nil, fmt.Errorf("generate root for %q: lifetime %v is not positive", trustDomain, lifetime)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("generate root: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: "weft mesh root " + trustDomain},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create root certificate for %q: %w", trustDomain, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode root key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	return certPEM, keyPEM, nil
}
