package spiffe

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ErrUntrusted is wrapped by errors about a certificate chain that does not
// verify against the trust bundle.
var ErrUntrusted = errors.New("certificate not trusted")

// VerifyChain verifies a peer's certificate chain (DER, leaf first, as
// crypto/tls passes it to VerifyPeerCertificate) against roots at time now,
// for the key usage usage (x509.ExtKeyUsageClientAuth on a server,
// ExtKeyUsageServerAuth on a client), and returns the leaf's SPIFFE ID and
// the leaf. The ID's trust domain must be trustDomain. Intermediates may
// follow the leaf.
func VerifyChain(rawCerts [][]byte, roots *x509.CertPool, trustDomain string, usage x509.ExtKeyUsage, now time.Time) (ID, *x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return ID{}, nil, fmt.Errorf("%w: peer sent no certificate", ErrUntrusted)
	}
	if roots == nil {
		return ID{}, nil, fmt.Errorf("%w: no trust bundle", ErrUntrusted)
	}
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return ID{}, nil, fmt.Errorf("%w: parse certificate %d of the chain: %w", ErrUntrusted, i, err)
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	if _, err := leaf.Verify(opts); err != nil {
		return ID{}, nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	id, err := FromCertificate(leaf)
	if err != nil {
		return ID{}, nil, err
	}
	if id.TrustDomain != trustDomain {
		return ID{}, nil, fmt.Errorf("%w: %s is not in trust domain %q", ErrUntrusted, id, trustDomain)
	}
	return id, leaf, nil
}
