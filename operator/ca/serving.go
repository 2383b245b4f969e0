package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"
)

// backdate covers small clock differences between the operator and the
// node proxies that verify a fresh serving certificate.
const backdate = time.Minute

// servingCert issues the CSR service's TLS certificate from the CA that
// signs now, and issues a new one at half its lifetime or as soon as
// signing moved to another CA, on the handshake that notices: renewal needs
// no goroutine of its own. It is safe for concurrent use.
type servingCert struct {
	authority *Authority
	dnsNames  []string
	lifetime  time.Duration
	log       *slog.Logger
	now       func() time.Time

	// mu guards the fields below.
	mu sync.Mutex
	// cert is nil until the first handshake; issuer signed it.
	cert    *tls.Certificate
	issuer  *material
	renewAt time.Time
}

// GetCertificate is the tls.Config hook.
func (s *servingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	signer := s.authority.view.Load().signer
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert != nil && s.issuer == signer && now.Before(s.renewAt) {
		return s.cert, nil
	}
	cert, err := issueServing(signer, s.dnsNames, s.lifetime, now)
	if err != nil {
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			s.log.Error("renew the serving certificate; serving the current one", "notAfter", s.cert.Leaf.NotAfter, "err", err)
			return s.cert, nil
		}
		return nil, err
	}
	life := cert.Leaf.NotAfter.Sub(now)
	s.cert, s.issuer, s.renewAt = cert, signer, now.Add(life/2)
	s.log.Info("issued the serving certificate", "dnsNames", s.dnsNames, "notAfter", cert.Leaf.NotAfter, "issuer", signer.ca.Certificate().Subject.String())
	return cert, nil
}

// issueServing signs a TLS server certificate for dnsNames with m, valid
// from a minute ago for lifetime or until the CA expires.
func issueServing(m *material, dnsNames []string, lifetime time.Duration, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	notAfter := minTime(now.Add(lifetime), m.notAfter)
	if !notAfter.After(now) {
		return nil, fmt.Errorf("issue serving certificate: the CA expired at %s", m.notAfter.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: dnsNames[0]},
		DNSNames:              dnsNames,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.ca.Certificate(), key.Public(), m.key)
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate for %v: %w", dnsNames, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse serving certificate: %w", err)
	}
	return &tls.Certificate{
		Certificate: append([][]byte{der}, m.chain...),
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}
