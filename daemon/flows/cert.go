package flows

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// CertAnnotation is the agent pod's annotation holding the PEM certificate
// of its flow API's TLS listener; clients read it through the API server
// and pin it (server name = node name).
const CertAnnotation = "weft.io/flows-cert"

// certValidity is how long a serving certificate is valid. A new one is
// made at every agent start.
const certValidity = 365 * 24 * time.Hour

// SelfSignedCert makes a serving certificate for node nodeName: a new
// ECDSA P-256 key, subject CN and DNS SAN nodeName, the IPs as IP SANs,
// valid from an hour before now for a year. certPEM is the certificate
// alone, for clients to pin.
func SelfSignedCert(nodeName string, ips []net.IP, now time.Time) (cert tls.Certificate, certPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate flow api key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate flow api cert serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: nodeName, Organization: []string{"weft"}},
		DNSNames:              []string{nodeName},
		IPAddresses:           ips,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own issuer: clients pin it as their only root
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("create flow api cert for %s: %w", nodeName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("parse flow api cert: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, certPEM, nil
}

// PublishCert sets CertAnnotation on pod namespace/name to certPEM,
// retrying (1 s doubling to 30 s) until it succeeds or ctx ends; it
// returns nil either way, after logging.
func PublishCert(ctx context.Context, client kubernetes.Interface, namespace, name string, certPEM []byte, log *slog.Logger) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{CertAnnotation: string(certPEM)}},
	})
	if err != nil {
		return fmt.Errorf("encode cert annotation patch: %w", err)
	}
	log = log.With("pod", namespace+"/"+name, "annotation", CertAnnotation)
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		_, err := client.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "weft-agent"})
		if err == nil {
			log.Info("published flow api certificate")
			return nil
		}
		log.Warn("cannot publish flow api certificate, retrying", "err", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}
