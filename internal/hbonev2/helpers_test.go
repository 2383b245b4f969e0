package hbonev2

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	serverID = "spiffe://cluster.local/ns/shop/sa/server"
	clientID = "spiffe://cluster.local/ns/shop/sa/client"
)

// testPKI is a CA with one server and one client certificate, made per test
// run, carrying SPIFFE IDs as URI SANs.
type testPKI struct {
	roots  *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

var (
	pkiOnce sync.Once
	pki     testPKI
	pkiErr  error
)

func getPKI(tb testing.TB) testPKI {
	tb.Helper()
	pkiOnce.Do(func() { pki, pkiErr = newPKI() })
	if pkiErr != nil {
		tb.Fatalf("make test certificates: %v", pkiErr)
	}
	return pki
}

func newPKI() (testPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return testPKI{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"weft test CA"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return testPKI{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return testPKI{}, err
	}
	leaf := func(serial int64, id string, usage x509.ExtKeyUsage) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		u, err := url.Parse(id)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			URIs:         []*url.URL{u},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
	}
	p := testPKI{roots: x509.NewCertPool()}
	p.roots.AddCert(ca)
	if p.server, err = leaf(2, serverID, x509.ExtKeyUsageServerAuth); err != nil {
		return testPKI{}, err
	}
	if p.client, err = leaf(3, clientID, x509.ExtKeyUsageClientAuth); err != nil {
		return testPKI{}, err
	}
	return p, nil
}

// verifySPIFFE returns a VerifyPeerCertificate that checks the chain against
// roots and the leaf's URI SAN against want, as ztunnel's dialer does.
func verifySPIFFE(roots *x509.CertPool, want string, usage x509.ExtKeyUsage) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("no peer certificate")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
			return fmt.Errorf("peer identity %v, want %s", leaf.URIs, want)
		}
		return nil
	}
}

func (p testPKI) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{p.server},
		NextProtos:            []string{"h2"},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: verifySPIFFE(p.roots, clientID, x509.ExtKeyUsageClientAuth),
	}
}

func (p testPKI) clientConfig(wantServer string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.client},
		NextProtos:   []string{"h2"},
		// The server is named by its SPIFFE ID, not a DNS name, so chain
		// and identity are checked in VerifyPeerCertificate instead.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifySPIFFE(p.roots, wantServer, x509.ExtKeyUsageServerAuth),
	}
}

// testServer accepts loopback connections and runs ServeConn on each.
type testServer struct {
	addr     netip.AddrPort
	accepted atomic.Int64 // TCP connections accepted
	served   atomic.Int64 // ServeConn calls that returned
	cancel   context.CancelFunc

	mu    sync.Mutex
	conns []net.Conn // raw TCP conns, for tests that kill them
}

type serverConfig struct {
	tls  *tls.Config // nil: plain TCP
	opts ServerOptions
}

func startServer(tb testing.TB, cfg serverConfig, handle func(context.Context, *Stream)) *testServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: ln.Addr().(*net.TCPAddr).AddrPort(), cancel: cancel}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.accepted.Add(1)
			ts.mu.Lock()
			ts.conns = append(ts.conns, c)
			ts.mu.Unlock()
			wg.Go(func() {
				defer ts.served.Add(1)
				var nc net.Conn = c
				if cfg.tls != nil {
					tc := tls.Server(c, cfg.tls)
					hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
					err := tc.HandshakeContext(hctx)
					hcancel()
					if err != nil {
						c.Close()
						return
					}
					nc = tc
				}
				ServeConn(ctx, nc, cfg.opts, handle)
			})
		}
	})
	tb.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ts
}

// killConns closes the server's TCP connections under ServeConn, as a
// server that went away would.
func (ts *testServer) killConns() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, c := range ts.conns {
		c.Close()
	}
	ts.conns = nil
}

// testDialer dials a testServer and counts its dials.
type testDialer struct {
	addr  netip.AddrPort
	tls   *tls.Config
	dials atomic.Int64
}

func (d *testDialer) dial(ctx context.Context, key Key) (net.Conn, error) {
	d.dials.Add(1)
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.addr.String())
	if err != nil {
		return nil, err
	}
	if d.tls == nil {
		return c, nil
	}
	tc := tls.Client(c, d.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

func newTestPool(tb testing.TB, d *testDialer, opts PoolOptions) *Pool {
	tb.Helper()
	p := NewPool(d.dial, opts)
	tb.Cleanup(func() { p.Close() })
	return p
}

var (
	testTarget = netip.MustParseAddrPort("10.1.2.3:8080")
	testKey    = Key{SourcePod: "pod-a", SourceIdentity: clientID, DestIdentity: serverID, Dest: netip.MustParseAddrPort("10.1.2.3:15008")}
)

// echo accepts every stream and copies it back, half-closing when the
// client does.
func echo(ctx context.Context, s *Stream) {
	c, err := s.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	c.CloseWrite()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// within runs f and fails tb if it does not return within d, so a hang
// shows up as a failure with its name rather than as the test binary's
// timeout.
func within[T any](tb testing.TB, d time.Duration, what string, f func() T) T {
	tb.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		tb.Fatalf("%s did not return within %v", what, d)
		panic("unreachable")
	}
}

// checkLeaks records the goroutines running now and, at cleanup (so after
// every cleanup registered later), fails tb if goroutines started since are
// still running once a deadline passes.
func checkLeaks(tb testing.TB) {
	tb.Helper()
	before := goroutineIDs()
	tb.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			leaked := newGoroutines(before)
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				tb.Errorf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			<-tick.C
		}
	})
}

func goroutineIDs() map[string]bool {
	ids := make(map[string]bool)
	for _, g := range goroutines() {
		ids[goroutineID(g)] = true
	}
	return ids
}

func newGoroutines(before map[string]bool) []string {
	var out []string
	for _, g := range goroutines() {
		if !before[goroutineID(g)] && !strings.Contains(g, "testing.(*T).Run") {
			out = append(out, g)
		}
	}
	return out
}

func goroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := strings.Split(string(buf), "\n\n")
	// Leave out the goroutine asking.
	return slices.DeleteFunc(all, func(g string) bool { return strings.Contains(g, "hbonev2.goroutines(") })
}

func goroutineID(g string) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
	return id
}

// patternBase is random bytes longer than any stream, so a chunk that
// arrives at the wrong offset or on the wrong stream never matches.
var patternBase = func() []byte {
	b := make([]byte, 1<<20+4099)
	rand.Read(b)
	return b
}()

// pattern fills b with stream's deterministic bytes starting at offset off:
// patternBase rotated by a per-stream amount (7919 is odd, so the rotations
// of 65,536 streams differ).
func pattern(b []byte, stream uint32, off int) {
	n := len(patternBase)
	start := int((uint64(stream)*7919 + uint64(off)) % uint64(n))
	for len(b) > 0 {
		k := copy(b, patternBase[start:])
		b = b[k:]
		start = 0
	}
}

// checkPattern reads exactly n bytes from r and compares them with
// stream's pattern.
func checkPattern(r io.Reader, stream uint32, n int) error {
	buf := make([]byte, 32<<10)
	want := make([]byte, len(buf))
	off := 0
	for off < n {
		chunk := min(len(buf), n-off)
		got, err := io.ReadFull(r, buf[:chunk])
		if err != nil {
			return fmt.Errorf("read at %d of %d: %w", off+got, n, err)
		}
		pattern(want[:chunk], stream, off)
		if !bytes.Equal(buf[:chunk], want[:chunk]) {
			i := 0
			for buf[i] == want[i] {
				i++
			}
			return fmt.Errorf("byte %d = %#x, want %#x", off+i, buf[i], want[i])
		}
		off += chunk
	}
	return nil
}

func writePattern(w io.Writer, stream uint32, n int) error {
	buf := make([]byte, 32<<10)
	for off := 0; off < n; {
		chunk := min(len(buf), n-off)
		pattern(buf[:chunk], stream, off)
		if _, err := w.Write(buf[:chunk]); err != nil {
			return fmt.Errorf("write at %d of %d: %w", off, n, err)
		}
		off += chunk
	}
	return nil
}
