package proxy

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (*net.TCPConn, *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	a := <-accepted
	if a == nil {
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { d.Close(); a.Close() })
	deadline := time.Now().Add(10 * time.Second)
	d.SetDeadline(deadline)
	a.SetDeadline(deadline)
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// TestPipeHalfClose: a client that half-closes after its request still gets
// the whole response, and the counters see every byte in each direction.
func TestPipeHalfClose(t *testing.T) {
	client, down := tcpPair(t)
	up, server := tcpPair(t)
	var recvN, sentN atomic.Int64
	type result struct {
		recv, sent int64
		err        error
	}
	done := make(chan result, 1)
	go func() {
		r, s, err := pipe(down, up, func(n int) { recvN.Add(int64(n)) }, func(n int) { sentN.Add(int64(n)) })
		done <- result{r, s, err}
	}()

	request := bytes.Repeat([]byte("q"), 100_000)
	if _, err := client.Write(request); err != nil {
		t.Fatal(err)
	}
	client.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, request) {
		t.Fatalf("server read %d bytes, err %v; want the %d-byte request then EOF", len(got), err, len(request))
	}
	response := bytes.Repeat([]byte("r"), 300_000)
	if _, err := server.Write(response); err != nil {
		t.Fatal(err)
	}
	server.CloseWrite()
	got, err = io.ReadAll(client)
	if err != nil || !bytes.Equal(got, response) {
		t.Fatalf("client read %d bytes, err %v; want the %d-byte response after its own half-close", len(got), err, len(response))
	}
	r := <-done
	if r.err != nil || r.recv != int64(len(request)) || r.sent != int64(len(response)) {
		t.Fatalf("pipe = (%d, %d, %v), want (%d, %d, nil)", r.recv, r.sent, r.err, len(request), len(response))
	}
	if recvN.Load() != r.recv || sentN.Load() != r.sent {
		t.Errorf("counters saw %d/%d bytes, pipe returned %d/%d", recvN.Load(), sentN.Load(), r.recv, r.sent)
	}
}

// TestPipeResetEndsBoth: a reset on one side ends the other promptly.
func TestPipeResetEndsBoth(t *testing.T) {
	client, down := tcpPair(t)
	up, server := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := pipe(down, up, nil, nil)
		done <- err
	}()
	server.SetLinger(0)
	server.Close()
	if _, err := io.ReadAll(client); err == nil {
		// Either a reset or a clean close is fine for the client; what
		// matters is that it ended.
		t.Log("client saw a clean close")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("pipe still running 5 s after the server reset")
	}
}

func TestIsOwnListener(t *testing.T) {
	podIPs := []netip.Addr{netip.MustParseAddr("10.244.1.7")}
	tests := []struct {
		dst  string
		want bool
	}{
		{"127.0.0.1:15001", true},
		{"10.244.1.7:15008", true},
		{"10.244.1.7:15006", true},
		{"0.0.0.0:15001", true},
		{"10.244.1.8:15008", false}, // another pod's HBONE port
		{"10.244.1.7:8080", false},
		{"127.0.0.1:8080", false},
	}
	for _, tt := range tests {
		if got := isOwnListener(netip.MustParseAddrPort(tt.dst), podIPs); got != tt.want {
			t.Errorf("isOwnListener(%s) = %v, want %v", tt.dst, got, tt.want)
		}
	}
}
