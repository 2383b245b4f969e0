package testapp

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestStreamVerifiesEveryByte(t *testing.T) {
	tests := []struct {
		name    string
		corrupt bool
		wantOK  int
	}{
		{name: "echo", wantOK: 8},
		{name: "corrupting server", corrupt: true, wantOK: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := echoServer(t, tt.corrupt)
			res := Stream(context.Background(), StreamConfig{Addr: addr, Connections: 8, Bytes: 300_001, Marker: "MARK-1234", Timeout: 20 * time.Second})
			if res.OK != tt.wantOK {
				t.Fatalf("Stream ok = %d, want %d (errors %v)", res.OK, tt.wantOK, res.Errors)
			}
			if tt.wantOK > 0 && res.BytesReceived != 8*300_001 {
				t.Errorf("bytes received = %d, want %d", res.BytesReceived, 8*300_001)
			}
		})
	}
}

func TestPatternStartsWithMarkerAndDiffersPerConnection(t *testing.T) {
	a, b := make([]byte, 64), make([]byte, 64)
	newPattern(0, "MARK").fill(a)
	newPattern(1, "MARK").fill(b)
	if !strings.HasPrefix(string(a), "MARK") || string(a[4:]) == string(b[4:]) {
		t.Fatalf("patterns: %x / %x", a, b)
	}
	// Chunked fills equal one fill.
	p := newPattern(3, "M")
	c := make([]byte, 64)
	p.fill(c[:5])
	p.fill(c[5:13])
	p.fill(c[13:])
	d := make([]byte, 64)
	newPattern(3, "M").fill(d)
	if string(c) != string(d) {
		t.Fatalf("chunked fill differs: %x vs %x", c, d)
	}
}

func TestHoldReportsTheEnd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 8)
		for range 3 {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(buf)
		}
		c.Close()
	}()
	res := Hold(context.Background(), HoldConfig{Addr: ln.Addr().String(), Interval: 10 * time.Millisecond, Duration: 10 * time.Second})
	if res.Pings != 3 || res.Error == "" {
		t.Fatalf("Hold = %+v, want 3 pings then an error", res)
	}
}

func echoServer(t *testing.T, corrupt bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				var total int
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if corrupt && total <= 100_000 && total+n > 100_000 {
							buf[100_000-total] ^= 1
						}
						total += n
						c.Write(buf[:n])
					}
					if err != nil {
						c.(*net.TCPConn).CloseWrite()
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
