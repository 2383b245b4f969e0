package hbonev2

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// Benchmarks run over loopback. The baselines beside each HBONE benchmark
// run the same traffic over a plain TCP connection and over TLS 1.3 without
// HBONE, so what HBONE adds is the difference within one run.

const benchChunk = 256 << 10

// loopbackPair returns both ends of a TCP connection, TLS 1.3 on top if
// useTLS.
func loopbackPair(tb testing.TB, useTLS bool) (client, server net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		tb.Fatal("accept failed")
	}
	if useTLS {
		p := getPKI(tb)
		tc, ts := tls.Client(client, p.clientConfig(serverID)), tls.Server(server, p.serverConfig())
		errc := make(chan error, 1)
		go func() { errc <- ts.Handshake() }()
		if err := tc.Handshake(); err != nil {
			tb.Fatal(err)
		}
		if err := <-errc; err != nil {
			tb.Fatal(err)
		}
		client, server = tc, ts
	}
	tb.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// hbonePair returns both ends of one HBONE stream over TLS 1.3 on loopback,
// through a Pool and ServeConn.
func hbonePair(tb testing.TB) (client, server Conn) {
	tb.Helper()
	conns := make(chan Conn, 1)
	tn := newTunnel(tb, true, ServerOptions{}, PoolOptions{}, serverSide(conns))
	client = tn.connect(tb, nil)
	server = recvConn(tb, conns)
	return client, server
}

// pingPong has the server echo and the client time write-then-read of
// size bytes.
func pingPong(b *testing.B, client, server io.ReadWriter, size int) {
	go io.Copy(server, server)
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

// cpuClock measures the process's CPU time (user and system, all threads:
// both ends of the tunnel run in the benchmark's process) over a
// benchmark's loop, which ns/op alone hides: a scheduler handoff costs CPU
// whether or not it adds latency.
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{start: processCPU()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-c.start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkRoundTrip1K is one 1 KiB request and 1 KiB answer per op over
// one HBONE stream over TLS 1.3.
func BenchmarkRoundTrip1K(b *testing.B) {
	c, s := hbonePair(b)
	pingPong(b, c, s, 1<<10)
}

func BenchmarkRoundTrip1KTCP(b *testing.B) {
	c, s := loopbackPair(b, false)
	pingPong(b, c, s, 1<<10)
}

func BenchmarkRoundTrip1KTLS(b *testing.B) {
	c, s := loopbackPair(b, true)
	pingPong(b, c, s, 1<<10)
}

// bulk sends b.N chunks from client to server, which discards them, and
// waits until the server has read everything.
func bulk(b *testing.B, client io.Writer, server io.Reader, done func()) {
	read := make(chan int64, 1)
	go func() {
		// A proxy's copy loop reads with a buffer of its choosing (io.Discard
		// would read in 8 KiB pieces).
		buf := make([]byte, 64<<10)
		var n int64
		for {
			k, err := server.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		read <- n
	}()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	done()
	if n := <-read; n != int64(b.N)*benchChunk {
		b.Fatalf("server read %d bytes, want %d", n, int64(b.N)*benchChunk)
	}
	cpu.report(b)
}

// BenchmarkThroughput is one HBONE stream over TLS 1.3 in one direction.
func BenchmarkThroughput(b *testing.B) {
	c, s := hbonePair(b)
	bulk(b, c, s, func() { c.CloseWrite() })
}

// BenchmarkThroughputDown is the same from server to client, which takes
// the server's write path instead of the client's.
func BenchmarkThroughputDown(b *testing.B) {
	c, s := hbonePair(b)
	bulk(b, s, c, func() {
		c.CloseWrite()
		s.Read(make([]byte, 1)) // as in internal/hbone, though END_STREAM need not wait here
		s.CloseWrite()
	})
}

func BenchmarkThroughputTCP(b *testing.B) {
	c, s := loopbackPair(b, false)
	bulk(b, c, s, func() { c.(*net.TCPConn).CloseWrite() })
}

func BenchmarkThroughputTLS(b *testing.B) {
	c, s := loopbackPair(b, true)
	bulk(b, c, s, func() { c.(*tls.Conn).CloseWrite() })
}

// BenchmarkConnect is opening and closing one stream on a pooled
// connection.
func BenchmarkConnect(b *testing.B) {
	tn := newTunnel(b, true, ServerOptions{}, PoolOptions{}, echo)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := tn.pool.Connect(ctx, testKey, testTarget, nil)
		if err != nil {
			b.Fatal(err)
		}
		c.CloseWrite()
		if _, err := io.Copy(io.Discard, c); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
