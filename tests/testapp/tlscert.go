package testapp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// loadOrGenerateCert loads the key pair in certFile and keyFile, or, when
// both are empty, generates a self-signed certificate for the pod.
func loadOrGenerateCert(certFile, keyFile string, pod PodInfo, now time.Time) (tls.Certificate, error) {
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load key pair %s, %s: %w", certFile, keyFile, err)
		}
		return cert, nil
	case certFile != "" || keyFile != "":
		return tls.Certificate{}, errors.New("load key pair: --cert and --key must be given together")
	}
	return selfSignedCert(pod, now)
}

// selfSignedCert generates an ECDSA P-256 certificate, valid for a year from
// an hour before now, for localhost, the loopback addresses and the pod's
// name and IP. It is its own CA, so a client may trust it directly.
func selfSignedCert(pod PodInfo, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate serial number: %w", err)
	}
	name := pod.Name
	if name == "" {
		name = "weft-testapp"
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"weft-testapp"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if pod.Name != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, pod.Name)
	}
	if ip := net.ParseIP(pod.IP); ip != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
