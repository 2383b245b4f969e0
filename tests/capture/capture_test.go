package capture

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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/testutil"
)

var names = testutil.NewNames("wcp")

// Addresses exist only inside the test's own namespaces (198.18.0.0/15 is
// the benchmarking range, routed nowhere here).
var (
	addrA = netip.MustParseAddr("198.18.0.1")
	addrB = netip.MustParseAddr("198.18.0.2")
)

// topology is two namespaces, A and B, joined directly by a veth pair or
// through a bridge in a third namespace U (the shape of the cluster's
// underlay).
type topology struct {
	a, b, u string // netns names; u is "" without a bridge
}

func newTopology(t *testing.T, bridged bool) topology {
	t.Helper()
	names.RequirePrivileged(t)
	top := topology{a: names.Unique("a"), b: names.Unique("b")}
	if bridged {
		top.u = names.Unique("u")
	}
	for _, ns := range []string{top.a, top.b, top.u} {
		if ns == "" {
			continue
		}
		testutil.Run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { testutil.Run(t, "ip", "netns", "del", ns) })
		testutil.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	if bridged {
		testutil.Run(t, "ip", "-n", top.u, "link", "add", "br0", "type", "bridge")
		testutil.Run(t, "ip", "-n", top.u, "link", "set", "br0", "up")
		for leg, ns := range map[string]string{"la": top.a, "lb": top.b} {
			testutil.Run(t, "ip", "-n", top.u, "link", "add", leg, "type", "veth", "peer", "name", "eth0", "netns", ns)
			testutil.Run(t, "ip", "-n", top.u, "link", "set", leg, "master", "br0", "up")
		}
	} else {
		testutil.Run(t, "ip", "-n", top.a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", top.b)
	}
	for ns, addr := range map[string]netip.Addr{top.a: addrA, top.b: addrB} {
		testutil.Run(t, "ip", "-n", ns, "addr", "add", addr.String()+"/24", "dev", "eth0")
		testutil.Run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	return top
}

// in runs f on a thread inside the named namespace.
func in(t *testing.T, name string, f func() error) {
	t.Helper()
	ns, err := os.Open(filepath.Join("/run/netns", name))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Do(ns, f); err != nil {
		t.Fatalf("in netns %s: %v", name, err)
	}
}

func listen(t *testing.T, ns string, addr netip.AddrPort) net.Listener {
	t.Helper()
	var l net.Listener
	in(t, ns, func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		l, err = lc.Listen(context.Background(), "tcp4", addr.String())
		return err
	})
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, ns string, addr netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	in(t, ns, func() (err error) {
		c, err = (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp4", addr.String())
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// serve accepts one connection and runs h on it in a goroutine the test
// owns: the test waits for it in Cleanup and fails on its error.
func serve(t *testing.T, l net.Listener, h func(net.Conn) error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- fmt.Errorf("accept: %w", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		done <- h(c)
	}()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
}

func startCapture(t *testing.T, ns, iface, filter string) *Capture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	c, err := Start(ctx, t, ns, iface, filter)
	if err != nil {
		t.Fatalf("Start(%s, %s, %q): %v", ns, iface, filter, err)
	}
	return c
}

func stopCapture(t *testing.T, c *Capture) *Result {
	t.Helper()
	res, err := c.Stop()
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if res.Dropped != 0 {
		t.Errorf("capture dropped %d packets", res.Dropped)
	}
	t.Logf("capture: %s", res.Summary())
	return res
}

func newMarker(t *testing.T) []byte {
	t.Helper()
	return []byte("weft-capture-marker-" + rand.Text())
}

// TestPlaintext: a marker sent in two segments is found only by
// reassembly, and payload bytes are counted exactly, per direction.
func TestPlaintext(t *testing.T) {
	top := newTopology(t, false)
	server := netip.AddrPortFrom(addrB, 7000)
	marker := newMarker(t)
	half := len(marker) / 2
	filler := bytes.Repeat([]byte{'.'}, 4096)
	l := listen(t, top.b, server)
	serve(t, l, func(c net.Conn) error {
		buf := make([]byte, half)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if _, err := c.Write([]byte("1")); err != nil {
			return err
		}
		rest, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if got, want := len(rest), len(marker)-half+len(filler); got != want {
			return fmt.Errorf("read %d bytes after the first half, want %d", got, want)
		}
		_, err = c.Write([]byte("done"))
		return err
	})

	capt := startCapture(t, top.a, "eth0", "tcp port 7000")
	conn := dial(t, top.a, server)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// The server acknowledges the first half before the second is sent, so
	// the marker is split across two segments.
	if _, err := conn.Write(marker[:half]); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 1)
	if _, err := io.ReadFull(conn, ack); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(append(append([]byte(nil), marker[half:]...), filler...)); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(conn)
	if err != nil || string(reply) != "done" {
		t.Fatalf("reply = %q, %v; want \"done\"", reply, err)
	}
	clientPort := conn.LocalAddr().(*net.TCPAddr).AddrPort().Port()
	res := stopCapture(t, capt)

	if !res.Contains(marker) {
		t.Errorf("Contains(marker) = false, want true")
	}
	for _, f := range res.frames {
		if bytes.Contains(f, marker) {
			t.Errorf("a single frame holds the whole marker: the test does not exercise reassembly")
		}
	}
	if res.Contains([]byte("weft-capture-never-sent")) {
		t.Errorf("Contains(a marker never sent) = true, want false")
	}
	if got, want := res.TCPBytes(addrA, addrB, 7000), int64(len(marker)+len(filler)); got != want {
		t.Errorf("TCPBytes(A→B:7000) = %d, want %d", got, want)
	}
	if got, want := res.TCPBytes(addrB, addrA, clientPort), int64(len("1")+len("done")); got != want {
		t.Errorf("TCPBytes(B→A:%d) = %d, want %d", clientPort, got, want)
	}
	if got := res.TCPBytes(addrB, addrA, 7000); got != 0 {
		t.Errorf("TCPBytes(B→A:7000) = %d, want 0", got)
	}
	if got := res.TLSBytes(addrA, addrB, 7000); got != 0 {
		t.Errorf("TLSBytes(A, B, 7000) of plaintext = %d, want 0", got)
	}
	if res.Frames < 10 {
		t.Errorf("Frames = %d, want at least a handshake, data and teardown", res.Frames)
	}
	again, err := capt.Stop()
	if again != res || err != nil {
		t.Errorf("second Stop = %p, %v; want the first result %p", again, err, res)
	}
}

// TestTLS: a marker sent over TLS (on the HBONE port, which tshark decodes
// as TLS by default here, and on a port it only decodes when asked) is not
// on the wire, and TLS records account for every payload byte.
func TestTLS(t *testing.T) {
	top := newTopology(t, false)
	cert, pool := selfSigned(t, addrB)
	marker := newMarker(t)
	ports := []uint16{HBONEPort, 7443}
	for _, port := range ports {
		l := tls.NewListener(listen(t, top.b, netip.AddrPortFrom(addrB, port)), &tls.Config{
			Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		})
		serve(t, l, func(c net.Conn) error {
			buf := make([]byte, len(marker))
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			if !bytes.Equal(buf, marker) {
				return fmt.Errorf("read %q, want the marker", buf)
			}
			_, err := c.Write([]byte("ok"))
			return err
		})
	}

	capt := startCapture(t, top.a, "eth0", fmt.Sprintf("tcp port %d or tcp port %d", ports[0], ports[1]))
	for _, port := range ports {
		raw := dial(t, top.a, netip.AddrPortFrom(addrB, port))
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		conn := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "capture.test", MinVersion: tls.VersionTLS13})
		if _, err := conn.Write(marker); err != nil {
			t.Fatal(err)
		}
		reply := make([]byte, 2)
		if _, err := io.ReadFull(conn, reply); err != nil || string(reply) != "ok" {
			t.Fatalf("reply = %q, %v; want \"ok\"", reply, err)
		}
		conn.Close()
	}
	res := stopCapture(t, capt)

	if res.Contains(marker) {
		t.Errorf("Contains(marker) = true for a TLS connection, want false")
	}
	for _, port := range ports {
		tlsBytes := res.TLSBytes(addrA, addrB, port)
		if tlsBytes <= int64(len(marker)) {
			t.Errorf("TLSBytes(A, B, %d) = %d, want more than the %d-byte marker", port, tlsBytes, len(marker))
		}
		if reversed := res.TLSBytes(addrB, addrA, port); reversed != tlsBytes {
			t.Errorf("TLSBytes(B, A, %d) = %d, want TLSBytes(A, B) = %d (either direction)", port, reversed, tlsBytes)
		}
		// Every payload byte of the connection is a TLS record byte.
		var tcpBytes int64
		for k, fl := range res.flows {
			if k.dst.Port() == port || k.src.Port() == port {
				for _, run := range fl.runs {
					tcpBytes += int64(len(run))
				}
			}
		}
		if tcpBytes != tlsBytes {
			t.Errorf("port %d: TCP payload %d bytes, TLS records %d bytes; want equal", port, tcpBytes, tlsBytes)
		}
		if got := res.TCPBytes(addrA, addrB, port); got <= int64(len(marker)) {
			t.Errorf("TCPBytes(A→B:%d) = %d, want more than the marker", port, got)
		}
	}
	if got := res.TLSBytes(addrA, netip.MustParseAddr("198.18.0.99"), HBONEPort); got != 0 {
		t.Errorf("TLSBytes with another host = %d, want 0", got)
	}
}

// TestBridge: on a bridge (the cluster underlay's shape), a capture on the
// bridge device sees traffic forwarded between two of its ports, once.
func TestBridge(t *testing.T) {
	top := newTopology(t, true)
	server := netip.AddrPortFrom(addrB, 7000)
	marker := newMarker(t)
	serve(t, listen(t, top.b, server), func(c net.Conn) error {
		got, err := io.ReadAll(c)
		if err == nil && !bytes.Equal(got, marker) {
			err = fmt.Errorf("read %q, want the marker", got)
		}
		return err
	})
	capt := startCapture(t, top.u, UnderlayInterface, "tcp")
	conn := dial(t, top.a, server)
	if _, err := conn.Write(marker); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	res := stopCapture(t, capt)
	if !res.Contains(marker) {
		t.Errorf("Contains(marker) on the bridge = false, want true")
	}
	if got, want := res.TCPBytes(addrA, addrB, 7000), int64(len(marker)); got != want {
		t.Errorf("TCPBytes(A→B:7000) on the bridge = %d, want %d", got, want)
	}
}

// TestStartErrors: Start reports what dumpcap could not do, promptly.
func TestStartErrors(t *testing.T) {
	top := newTopology(t, false)
	tests := []struct {
		name, netns, iface, filter, want string
	}{
		{"no such netns", names.Unique("missing"), "eth0", "", "open netns"},
		{"no such interface", top.a, "nosuch0", "", "nosuch0"},
		{"bad filter", top.a, "eth0", "tcp port", "filter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			began := time.Now()
			c, err := Start(context.Background(), t, tt.netns, tt.iface, tt.filter)
			if err == nil {
				c.Stop()
				t.Fatalf("Start(%s, %s, %q) succeeded, want an error", tt.netns, tt.iface, tt.filter)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start error = %v, want it to mention %q", err, tt.want)
			}
			if d := time.Since(began); d > startTimeout/2 {
				t.Errorf("Start took %s to fail", d)
			}
		})
	}
}

// TestContextEnds: a capture whose context ends before Stop says so.
func TestContextEnds(t *testing.T) {
	top := newTopology(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Start(ctx, t, top.a, "eth0", "")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-c.exited
	if _, err := c.Stop(); !errors.Is(err, errStoppedEarly) {
		t.Errorf("Stop after the context ended = %v, want %v", err, errStoppedEarly)
	}
}

// selfSigned returns a TLS certificate for "capture.test" and ip, and a
// pool that trusts it.
func selfSigned(t *testing.T, ip netip.Addr) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "capture.test"},
		DNSNames:     []string{"capture.test"},
		IPAddresses:  []net.IP{ip.AsSlice()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
