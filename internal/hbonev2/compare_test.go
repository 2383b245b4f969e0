package hbonev2

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"

	"github.com/weftmesh/weft/internal/hbone"
)

// The V1 benchmarks run internal/hbone (x/net/http2) through the same
// loops as this package's, in the same binary, so the two can be compared
// within one run, cpu-ns/op included.

// v1Pair returns both ends of one internal/hbone stream over TLS 1.3 on
// loopback.
func v1Pair(tb testing.TB) (client, server hbone.Conn) {
	tb.Helper()
	p := getPKI(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	conns := make(chan hbone.Conn, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(c, p.serverConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return
		}
		hbone.ServeConn(ctx, tc, hbone.ServerOptions{}, func(_ context.Context, s *hbone.Stream) {
			if c, err := s.Accept(); err == nil {
				conns <- c
			}
		})
	})
	d := &testDialer{addr: ln.Addr().(*net.TCPAddr).AddrPort(), tls: p.clientConfig(serverID)}
	pool := hbone.NewPool(func(ctx context.Context, _ hbone.Key) (net.Conn, error) { return d.dial(ctx, Key{}) }, hbone.PoolOptions{})
	tb.Cleanup(func() {
		pool.Close()
		cancel()
		ln.Close()
		wg.Wait()
	})
	client, err = pool.Connect(ctx, hbone.Key{SourcePod: "pod-a", Dest: testKey.Dest}, testTarget, nil)
	if err != nil {
		tb.Fatalf("Connect: %v", err)
	}
	server = <-conns
	tb.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

func BenchmarkV1RoundTrip1K(b *testing.B) {
	c, s := v1Pair(b)
	pingPong(b, c, s, 1<<10)
}

func BenchmarkV1Throughput(b *testing.B) {
	c, s := v1Pair(b)
	bulk(b, c, s, func() { c.CloseWrite() })
}

func BenchmarkV1ThroughputDown(b *testing.B) {
	c, s := v1Pair(b)
	bulk(b, s, c, func() {
		c.CloseWrite()
		s.Read(make([]byte, 1)) // the client's EOF lets x/net's END_STREAM out
		s.CloseWrite()
	})
}
