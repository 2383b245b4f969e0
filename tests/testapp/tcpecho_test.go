package testapp

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestTCPEcho(t *testing.T) {
	withBanner, _ := startTCPEcho(t, TCPEchoConfig{Banner: "echo-0\n"})
	plain, _ := startTCPEcho(t, TCPEchoConfig{})

	tests := []struct {
		name       string
		cfg        TCPCheckConfig
		wantOK     bool
		wantBanner string
		wantRecv   string
	}{
		{name: "banner", cfg: TCPCheckConfig{Addr: withBanner.Addr().String(), Banner: true, Message: "hello"}, wantOK: true, wantBanner: "echo-0", wantRecv: "hello"},
		{name: "default message", cfg: TCPCheckConfig{Addr: plain.Addr().String()}, wantOK: true, wantRecv: "ping"},
		{name: "unexpected banner", cfg: TCPCheckConfig{Addr: withBanner.Addr().String()}, wantOK: false, wantRecv: "echo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Count = 3
			results := TCPCheck(t.Context(), tt.cfg)
			if len(results) != 3 {
				t.Fatalf("TCPCheck() returned %d results, want 3", len(results))
			}
			for i, r := range results {
				if r.OK() != tt.wantOK || r.Banner != tt.wantBanner || r.Received != tt.wantRecv {
					t.Errorf("result %d = %+v, want ok %t, banner %q, received %q", i, r, tt.wantOK, tt.wantBanner, tt.wantRecv)
				}
			}
		})
	}
}

func TestTCPCheckUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	results := TCPCheck(t.Context(), TCPCheckConfig{Addr: addr, Timeout: time.Second})
	if len(results) != 1 || results[0].OK() || !strings.Contains(results[0].Error, "dial") {
		t.Errorf("TCPCheck(closed port) = %+v, want one dial error", results)
	}
}

func TestTCPEchoShutdownClosesConnections(t *testing.T) {
	srv, stop := startTCPEcho(t, TCPEchoConfig{})
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Make sure the server has accepted and is echoing.
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("read after shutdown = %v, want EOF", err)
	}
}
