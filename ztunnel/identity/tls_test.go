package identity

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/spiffe"
)

// rawClient is a TLS 1.3 client that presents certs and checks nothing.
func rawClient(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, InsecureSkipVerify: true, Certificates: certs}
}

// rawServer is a TLS 1.3 server that presents cert and checks nothing.
func rawServer(cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert}
}

func spiffeTemplate(id spiffe.ID, usage ...x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: usage,
		URIs:        []*url.URL{id.URL()},
	}
}

func TestServerConfig(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t)
	m, _ := newTestManager(t, ca, clock, Options{})
	mustAcquire(t, m, idServer)
	other := newTestCA(t)
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	foreignTD := spiffe.ID{TrustDomain: "example.org", Namespace: "shop", ServiceAccount: "web"}
	tls12 := rawClient(ca.leaf(t, idClient, clock.Now(), time.Hour))
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	tests := []struct {
		name    string
		client  *tls.Config
		wantErr string // in the server's error; "" for a handshake that must succeed
	}{
		{name: "mesh client", client: rawClient(ca.leaf(t, idClient, clock.Now(), time.Hour))},
		{name: "no client certificate", client: rawClient(), wantErr: "client didn't provide a certificate"},
		{name: "certificate from another CA", client: rawClient(other.leaf(t, idClient, clock.Now(), time.Hour)), wantErr: "certificate signed by unknown authority"},
		{name: "expired certificate", client: rawClient(ca.leaf(t, idClient, clock.Now().Add(-48*time.Hour), time.Hour)), wantErr: "expired"},
		{name: "not yet valid certificate", client: rawClient(ca.leaf(t, idClient, clock.Now().Add(time.Hour), time.Hour)), wantErr: "not yet valid"},
		{name: "non-SPIFFE certificate", client: rawClient(ca.craft(t, &x509.Certificate{Subject: pkix.Name{CommonName: "web"}, DNSNames: []string{"web.shop.svc"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: both})), wantErr: "no spiffe URI SAN"},
		{name: "two SPIFFE IDs", client: rawClient(ca.craft(t, &x509.Certificate{URIs: []*url.URL{idClient.URL(), idOther.URL()}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: both})), wantErr: "has 2 spiffe URI SANs"},
		{name: "server-only usage", client: rawClient(ca.craft(t, spiffeTemplate(idClient, x509.ExtKeyUsageServerAuth))), wantErr: "incompatible key usage"},
		{name: "another trust domain", client: rawClient(ca.craft(t, spiffeTemplate(foreignTD, both...))), wantErr: `not in trust domain "cluster.local"`},
		{name: "self-signed with the right ID", client: rawClient(selfSigned(t, idClient)), wantErr: "unknown authority"},
		{name: "TLS 1.2", client: tls12, wantErr: "unsupported versions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := handshake(t, m.ServerConfig(idServer), tt.client)
			if tt.wantErr == "" {
				if server.err != nil || client.err != nil {
					t.Fatalf("handshake: server %v, client %v; want success", server.err, client.err)
				}
				if id, err := PeerID(server.state); err != nil || id != idClient {
					t.Errorf("PeerID() = %v, %v; want %v", id, err, idClient)
				}
				if server.state.NegotiatedProtocol != "h2" || server.state.Version != tls.VersionTLS13 {
					t.Errorf("negotiated %q over %x, want h2 over TLS 1.3", server.state.NegotiatedProtocol, server.state.Version)
				}
				return
			}
			if server.err == nil || !strings.Contains(server.err.Error(), tt.wantErr) {
				t.Errorf("server handshake = %v, want an error containing %q", server.err, tt.wantErr)
			}
			if client.err == nil {
				t.Error("the client exchanged data with a server that should have refused it")
			}
		})
	}
}

// selfSigned returns a self-signed certificate naming id, as an attacker
// without the CA key could make.
func selfSigned(tb testing.TB, id spiffe.ID) tls.Certificate {
	tb.Helper()
	ca := newTestCA(tb) // a fresh key pair and a root to sign with
	c := ca.craft(tb, spiffeTemplate(id, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth))
	c.Certificate = c.Certificate[:1]
	return c
}

func TestClientConfig(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t)
	m, _ := newTestManager(t, ca, clock, Options{})
	mustAcquire(t, m, idServer, idClient, idOther)
	other := newTestCA(t)
	tests := []struct {
		name      string
		server    *tls.Config
		wantErr   string // in the client's error; "" for success
		wantErrIs error
	}{
		{name: "the wanted server", server: m.ServerConfig(idServer)},
		{
			name:      "a valid mesh server of another ServiceAccount",
			server:    m.ServerConfig(idOther),
			wantErr:   "server is spiffe://cluster.local/ns/shop/sa/admin, want spiffe://cluster.local/ns/shop/sa/cart",
			wantErrIs: ErrPeerMismatch,
		},
		{name: "certificate from another CA", server: rawServer(other.leaf(t, idServer, clock.Now(), time.Hour)), wantErr: "unknown authority", wantErrIs: spiffe.ErrUntrusted},
		{name: "expired certificate", server: rawServer(ca.leaf(t, idServer, clock.Now().Add(-48*time.Hour), time.Hour)), wantErr: "expired", wantErrIs: spiffe.ErrUntrusted},
		{name: "client-only usage", server: rawServer(ca.craft(t, spiffeTemplate(idServer, x509.ExtKeyUsageClientAuth))), wantErr: "incompatible key usage", wantErrIs: spiffe.ErrUntrusted},
		{name: "non-SPIFFE certificate", server: rawServer(ca.craft(t, &x509.Certificate{DNSNames: []string{"cart.shop.svc"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})), wantErr: "no spiffe URI SAN", wantErrIs: spiffe.ErrInvalidID},
		{name: "self-signed with the right ID", server: rawServer(selfSigned(t, idServer)), wantErr: "unknown authority", wantErrIs: spiffe.ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := handshake(t, tt.server, m.ClientConfig(idClient, idServer))
			if tt.wantErr == "" {
				if server.err != nil || client.err != nil {
					t.Fatalf("handshake: server %v, client %v; want success", server.err, client.err)
				}
				if id, err := PeerID(client.state); err != nil || id != idServer {
					t.Errorf("PeerID() = %v, %v; want %v", id, err, idServer)
				}
				return
			}
			if !errors.Is(client.err, tt.wantErrIs) || !strings.Contains(client.err.Error(), tt.wantErr) {
				t.Errorf("client handshake = %v, want an error wrapping %v containing %q", client.err, tt.wantErrIs, tt.wantErr)
			}
			if server.err == nil {
				t.Error("the server completed a handshake the client should have refused")
			}
		})
	}
}

func TestConfigsWithoutACertificateRefuse(t *testing.T) {
	ca := newTestCA(t)
	m, _ := newTestManager(t, ca, nil, Options{})
	mustAcquire(t, m, idServer)

	server, client := handshake(t, m.ServerConfig(idOther), rawClient(ca.leaf(t, idClient, time.Now(), time.Hour)))
	if !errors.Is(server.err, ErrNoCertificate) || client.err == nil {
		t.Errorf("server without a certificate: server %v, client %v; want ErrNoCertificate and a failed client", server.err, client.err)
	}
	server, client = handshake(t, m.ServerConfig(idServer), m.ClientConfig(idOther, idServer))
	if !errors.Is(client.err, ErrNoCertificate) || server.err == nil {
		t.Errorf("client without a certificate: server %v, client %v; want ErrNoCertificate and a failed server", server.err, client.err)
	}
}

// TestBundleChangeAppliesToKnownClients: once a root leaves the bundle, a
// client that connected before under it is refused, even with a session
// cache (no resumption past verification).
func TestBundleChangeAppliesToKnownClients(t *testing.T) {
	ca := newTestCA(t)
	next := newTestCA(t)
	m := NewManager(newCASigner(ca, time.Now), nil, Options{}, testLogger(t))
	if err := m.SetExtraRoots(append(ca.certPEM, next.certPEM...)); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, m, idServer)
	client := rawClient(ca.leaf(t, idClient, time.Now(), time.Hour))
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)

	server, cl := handshake(t, m.ServerConfig(idServer), client)
	if server.err != nil || cl.err != nil {
		t.Fatalf("first handshake: server %v, client %v; want success", server.err, cl.err)
	}
	if err := m.SetExtraRoots(next.certPEM); err != nil {
		t.Fatal(err)
	}
	server, cl = handshake(t, m.ServerConfig(idServer), client)
	if server.err == nil || !strings.Contains(server.err.Error(), "unknown authority") {
		t.Errorf("handshake after the client's root left the bundle: server %v, want unknown authority", server.err)
	}
	if cl.err == nil || cl.state.DidResume {
		t.Errorf("client: err %v, resumed %v; want refused and not resumed", cl.err, cl.state.DidResume)
	}
}

func TestPeerIDNeedsACompletedHandshake(t *testing.T) {
	if _, err := PeerID(tls.ConnectionState{}); err == nil {
		t.Error("PeerID(no handshake) = nil error, want an error")
	}
	if _, err := PeerID(tls.ConnectionState{HandshakeComplete: true}); err == nil {
		t.Error("PeerID(no peer certificate) = nil error, want an error")
	}
}

// BenchmarkHandshake measures one full TLS 1.3 mutual handshake on
// loopback with SPIFFE verification on both sides, TCP connect included.
func BenchmarkHandshake(b *testing.B) {
	ca := newTestCA(b)
	m := NewManager(newCASigner(ca, time.Now), staticRoots{ca.cert}, Options{}, slogDiscard())
	mustAcquire(b, m, idServer, idClient)
	addr := echoServer(b, m.ServerConfig(idServer))
	cfg := m.ClientConfig(idClient, idServer)
	b.ResetTimer()
	for b.Loop() {
		tc, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		// The server's greeting follows its side of the handshake, so
		// reading it waits for the client certificate's verification.
		buf := make([]byte, 1)
		if _, err := tc.Read(buf); err != nil {
			b.Fatal(err)
		}
		tc.Close()
	}
}
