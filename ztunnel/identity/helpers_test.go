package identity

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

var (
	idServer = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}
	idClient = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"}
	idOther  = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "admin"}
)

// start is the fake clock's start; a fixed instant keeps failures
// reproducible.
var start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a clock tests move by hand. It is safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: start} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// testCA is a mesh CA for tests, with its key at hand for crafting
// certificates SignCSR would never issue.
type testCA struct {
	ca   *pki.CA
	cert *x509.Certificate
	key  crypto.Signer
	// certPEM and keyPEM are the files a CA directory holds.
	certPEM, keyPEM []byte
}

func newTestCA(tb testing.TB) *testCA {
	tb.Helper()
	certPEM, keyPEM, err := pki.GenerateRoot("cluster.local", 10*365*24*time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{ca: ca, cert: ca.Certificate(), key: key.(crypto.Signer), certPEM: certPEM, keyPEM: keyPEM}
}

// leaf returns a certificate for id issued through SignCSR at now.
func (c *testCA) leaf(tb testing.TB, id spiffe.ID, now time.Time, lifetime time.Duration) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		tb.Fatal(err)
	}
	chain, err := c.ca.SignCSR(csr, id, lifetime, now)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := tls.X509KeyPair(chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// craft returns a certificate from tmpl (serial and validity filled in if
// unset) for a new key, signed by the CA's key.
func (c *testCA) craft(tb testing.TB, tmpl *x509.Certificate) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(1)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = start.Add(-time.Hour), start.Add(100*24*time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, c.cert.Raw}, PrivateKey: key, Leaf: leaf}
}

// signCall is one call a caSigner received.
type signCall struct {
	at  time.Time
	csr []byte
	id  spiffe.ID
}

// caSigner is a Signer over a testCA on a test clock, which records its
// calls and can be made to fail or to block. It is safe for concurrent use.
type caSigner struct {
	now      func() time.Time
	lifetime time.Duration
	// entered receives a value each time Sign is entered, if not nil.
	entered chan struct{}

	mu    sync.Mutex
	ca    *testCA
	calls []signCall
	fail  error         // returned by Sign when set
	gate  chan struct{} // Sign waits for it to close (or ctx) when set
}

func newCASigner(ca *testCA, now func() time.Time) *caSigner {
	return &caSigner{ca: ca, now: now, lifetime: 24 * time.Hour}
}

func (s *caSigner) Sign(ctx context.Context, csr []byte, id spiffe.ID) ([]byte, error) {
	s.mu.Lock()
	s.calls = append(s.calls, signCall{at: s.now(), csr: csr, id: id})
	gate, fail, ca := s.gate, s.fail, s.ca
	s.mu.Unlock()
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	return ca.ca.SignCSR(csr, id, s.lifetime, s.now())
}

func (s *caSigner) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *caSigner) Calls() []signCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]signCall(nil), s.calls...)
}

// staticRoots is a RootSource that never changes.
type staticRoots []*x509.Certificate

func (r staticRoots) Roots() ([]*x509.Certificate, error) { return r, nil }

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestManager returns a Manager signing with ca on clock (nil: the real
// clock), trusting ca's root.
func newTestManager(tb testing.TB, ca *testCA, clock *fakeClock, opts Options) (*Manager, *caSigner) {
	tb.Helper()
	now := time.Now
	if clock != nil {
		now = clock.Now
	}
	opts.Now = now
	s := newCASigner(ca, now)
	return NewManager(s, staticRoots{ca.cert}, opts, testLogger(tb)), s
}

// startRun runs m.Run until the test ends, and fails the test if Run does
// not return promptly once cancelled or returns an error.
func startRun(tb testing.TB, m *Manager) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run() = %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			tb.Error("Run did not return within 10s of cancel")
		}
	})
}

func mustAcquire(tb testing.TB, m *Manager, ids ...spiffe.ID) {
	tb.Helper()
	for _, id := range ids {
		if err := m.Acquire(context.Background(), id); err != nil {
			tb.Fatalf("Acquire(%s) = %v", id, err)
		}
	}
}

// waitFor polls cond until it holds, failing tb after 10s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after 10s waiting for %s", what)
		}
		<-tick.C
	}
}

func statusOf(tb testing.TB, m *Manager, id spiffe.ID) CertStatus {
	tb.Helper()
	for _, s := range m.Status() {
		if s.ID == id {
			return s
		}
	}
	return CertStatus{}
}

func serialOf(c *tls.Certificate) string { return c.Leaf.SerialNumber.Text(16) }

// result is one side of a handshake.
type result struct {
	state tls.ConnectionState
	err   error
}

// handshake connects a client with clientCfg to a server with serverCfg over
// loopback. The server writes one byte after its handshake and the client
// reads it, so a client error also covers a server that refused the
// client's certificate after the client's side had finished (TLS 1.3).
func handshake(tb testing.TB, serverCfg, clientCfg *tls.Config) (server, client result) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(conn, serverCfg)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte("k"))
		done <- result{state: tc.ConnectionState(), err: err}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, clientCfg)
	client.err = tc.Handshake()
	if client.err == nil {
		buf := make([]byte, 1)
		if _, err := tc.Read(buf); err != nil {
			client.err = fmt.Errorf("read after handshake: %w", err)
		}
	}
	client.state = tc.ConnectionState()
	// Closing first ends a server still waiting for a client that gave up
	// without an alert.
	conn.Close()
	return <-done, client
}

// echoServer serves cfg on loopback until the test ends: after each
// handshake it writes "<peer id> <peer serial>\n", then echoes lines.
func echoServer(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Go(func() {
				defer conn.Close()
				tc := tls.Server(conn, cfg)
				if err := tc.Handshake(); err != nil {
					return
				}
				cs := tc.ConnectionState()
				id, err := PeerID(cs)
				if err != nil {
					fmt.Fprintf(tc, "error %v\n", err)
					return
				}
				fmt.Fprintf(tc, "%s %s\n", id, cs.PeerCertificates[0].SerialNumber.Text(16))
				r := bufio.NewReader(tc)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := tc.Write([]byte(line)); err != nil {
						return
					}
				}
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// meshConn is a client connection to an echoServer.
type meshConn struct {
	tc *tls.Conn
	r  *bufio.Reader
	// seenAs is what the server reported about the client: "<id> <serial>".
	seenAs string
}

func dialEcho(tb testing.TB, addr string, cfg *tls.Config) *meshConn {
	tb.Helper()
	tc, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &meshConn{tc: tc, r: bufio.NewReader(tc)}
	line, err := c.r.ReadString('\n')
	if err != nil {
		tb.Fatalf("read the server's greeting: %v", err)
	}
	c.seenAs = strings.TrimSpace(line)
	return c
}

// roundTrip sends msg and returns the echo.
func (c *meshConn) roundTrip(msg string) (string, error) {
	if _, err := c.tc.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// serverSerial is the serial of the certificate the server presented.
func (c *meshConn) serverSerial() string {
	return c.tc.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
