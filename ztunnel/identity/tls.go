package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/weftmesh/weft/internal/spiffe"
)

// ErrPeerMismatch is wrapped by a client handshake's error when the server
// verified but is not the workload the client meant to reach.
var ErrPeerMismatch = errors.New("peer is not the expected identity")

// alpnH2 is HBONE's application protocol: HTTP/2 CONNECT (§3.2).
const alpnH2 = "h2"

// ServerConfig returns the HBONE server side for local: TLS 1.3 only, ALPN
// h2, local's current certificate picked per handshake (a renewal needs no
// restart and leaves open connections alone), and a client certificate
// required and verified as a SPIFFE SVID of the trust domain against the
// trust bundle at the time of the handshake. PeerID returns the verified
// client identity.
//
// Verification runs in VerifyConnection, which crypto/tls calls on every
// handshake that completes; session tickets are off, so no handshake skips
// it by resuming a session verified under an older bundle.
func (m *Manager) ServerConfig(local spiffe.ID) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		NextProtos:             []string{alpnH2},
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return m.Certificate(local)
		},
		// crypto/tls cannot verify SPIFFE identities itself: it only
		// insists on a certificate, and VerifyConnection does the rest.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := m.verifyPeer(cs, x509.ExtKeyUsageClientAuth)
			if err != nil {
				return fmt.Errorf("verify client: %w", err)
			}
			return nil
		},
	}
}

// ClientConfig returns the HBONE client side for local connecting to the
// workload wantServer: TLS 1.3 only, ALPN h2, local's current certificate
// presented, and the server's chain verified as a SPIFFE SVID against the
// trust bundle; a server that verifies but is not wantServer is refused with
// an error wrapping ErrPeerMismatch.
//
// InsecureSkipVerify only turns off crypto/tls's hostname-based checks,
// which do not apply to SPIFFE IDs; VerifyConnection, which crypto/tls calls
// on every handshake that completes, does the verification instead.
func (m *Manager) ClientConfig(local, wantServer spiffe.ID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{alpnH2},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.Certificate(local)
		},
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := m.verifyPeer(cs, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("verify server %s: %w", wantServer, err)
			}
			if got != wantServer {
				return fmt.Errorf("verify server: %w: server is %s, want %s", ErrPeerMismatch, got, wantServer)
			}
			return nil
		},
	}
}

// verifyPeer verifies the peer's chain in cs for usage against the current
// bundle and returns its identity.
func (m *Manager) verifyPeer(cs tls.ConnectionState, usage x509.ExtKeyUsage) (spiffe.ID, error) {
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	id, _, err := spiffe.VerifyChain(raw, m.bundle(), m.opts.TrustDomain, usage, m.opts.Now())
	return id, err
}

// PeerID returns the SPIFFE ID of the peer of a completed handshake made
// with ServerConfig or ClientConfig, whose verification guarantees it; for
// a connection configured any other way the ID is unverified.
func PeerID(cs tls.ConnectionState) (spiffe.ID, error) {
	if !cs.HandshakeComplete {
		return spiffe.ID{}, errors.New("read peer identity: handshake not complete")
	}
	if len(cs.PeerCertificates) == 0 {
		return spiffe.ID{}, errors.New("read peer identity: peer sent no certificate")
	}
	id, err := spiffe.FromCertificate(cs.PeerCertificates[0])
	if err != nil {
		return spiffe.ID{}, fmt.Errorf("read peer identity: %w", err)
	}
	return id, nil
}
