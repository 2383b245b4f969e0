//lint:file-ignore SA1019 the tests drive ServeConn with x/net/http2's own client, as the pool does.

package hbonev2

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// rawClient is an HTTP/2 client conn to ServeConn over a pipe, for requests
// the pool would never send.
func rawClient(tb testing.TB, handle func(context.Context, *Stream)) *http2.ClientConn {
	tb.Helper()
	client, server := net.Pipe()
	served := make(chan struct{})
	go func() {
		defer close(served)
		ServeConn(context.Background(), server, ServerOptions{}, handle)
	}()
	cc, err := (&http2.Transport{}).NewClientConn(client)
	if err != nil {
		tb.Fatalf("NewClientConn: %v", err)
	}
	tb.Cleanup(func() {
		cc.Close()
		within(tb, 10*time.Second, "ServeConn after client close", func() bool { <-served; return true })
	})
	return cc
}

func TestRefusedBeforeHandler(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		authority  string
		wantStatus int
		wantAllow  string
	}{
		{name: "GET", method: http.MethodGet, authority: "10.1.2.3:8080", wantStatus: 405, wantAllow: "CONNECT"},
		{name: "POST", method: http.MethodPost, authority: "10.1.2.3:8080", wantStatus: 405, wantAllow: "CONNECT"},
		{name: "name authority", method: http.MethodConnect, authority: "backend.shop.svc:8080", wantStatus: 400},
		{name: "no port", method: http.MethodConnect, authority: "10.1.2.3", wantStatus: 400},
		{name: "port zero", method: http.MethodConnect, authority: "10.1.2.3:0", wantStatus: 400},
		{name: "port too big", method: http.MethodConnect, authority: "10.1.2.3:70000", wantStatus: 400},
		{name: "ipv6 without brackets", method: http.MethodConnect, authority: "fd00::1:80", wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			var called atomic.Int64
			cc := rawClient(t, func(ctx context.Context, s *Stream) {
				called.Add(1)
				echo(ctx, s)
			})
			req := &http.Request{
				Method: tt.method,
				URL:    &url.URL{Scheme: "https", Host: tt.authority, Path: "/"},
				Host:   tt.authority,
				Header: http.Header{},
			}
			if tt.method == http.MethodConnect {
				req.URL = &url.URL{Host: tt.authority}
			}
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if got := resp.Header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
			if resp.Header.Get(ReasonHeader) == "" {
				t.Errorf("no %s header on a %d", ReasonHeader, resp.StatusCode)
			}
			if n := called.Load(); n != 0 {
				t.Errorf("handler called %d times, want 0", n)
			}
		})
	}
}

// A refusal carries :status and x-weft-reason and nothing else.
func TestRejectHeaders(t *testing.T) {
	checkLeaks(t)
	cc := rawClient(t, func(_ context.Context, s *Stream) { s.Reject(403, "no") })
	resp, err := cc.RoundTrip(&http.Request{Method: http.MethodConnect, URL: &url.URL{Host: "10.1.2.3:80"}, Host: "10.1.2.3:80", Header: http.Header{}})
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := http.Header{"X-Weft-Reason": {"no"}}
	if resp.StatusCode != 403 || len(body) != 0 || len(resp.Header) != len(want) || resp.Header.Get(ReasonHeader) != "no" {
		t.Errorf("response = %d %v body %q, want 403 %v and no body", resp.StatusCode, resp.Header, body, want)
	}
}

// ServeConn must return and close the connection whatever the peer does.
func TestServeConnBadPeers(t *testing.T) {
	tests := []struct {
		name string
		// peer plays the client on c; it returns when done misbehaving.
		peer func(tb testing.TB, c net.Conn)
		// reads says the peer reads c itself; otherwise the test drains c
		// so the server never blocks writing to it.
		reads bool
	}{
		{
			name: "garbage instead of preface",
			peer: func(tb testing.TB, c net.Conn) {
				c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			},
		},
		{
			name: "binary garbage",
			peer: func(tb testing.TB, c net.Conn) {
				c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0xff, 0x01, 0x00, 0x00, 0x00})
			},
		},
		{
			name: "stalls before preface",
			peer: func(tb testing.TB, c net.Conn) {},
		},
		{
			name: "stalls mid preface",
			peer: func(tb testing.TB, c net.Conn) { c.Write([]byte(http2.ClientPreface[:10])) },
		},
		{
			name: "stalls after preface and an unknown frame",
			peer: func(tb testing.TB, c net.Conn) {
				c.Write([]byte(http2.ClientPreface))
				c.Write([]byte{0, 0, 4, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3, 4})
			},
		},
		{
			name: "protocol violation",
			peer: func(tb testing.TB, c net.Conn) {
				c.Write([]byte(http2.ClientPreface))
				// A SETTINGS frame whose length is not a multiple of 6.
				c.Write([]byte{0, 0, 5, 0x4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5})
			},
		},
		{
			name: "resets mid stream",
			peer: func(tb testing.TB, c net.Conn) {
				cc, err := (&http2.Transport{}).NewClientConn(c)
				if err != nil {
					tb.Errorf("NewClientConn: %v", err)
					return
				}
				pr, pw := io.Pipe()
				defer pw.Close()
				resp, err := cc.RoundTrip(&http.Request{Method: http.MethodConnect, URL: &url.URL{Host: "10.1.2.3:80"}, Host: "10.1.2.3:80", Header: http.Header{}, Body: pr})
				if err != nil {
					tb.Errorf("RoundTrip: %v", err)
					return
				}
				pw.Write([]byte("partial"))
				resp.Body.Read(make([]byte, 7))
				// An abortive TCP close: RST instead of FIN.
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				c.Close()
			},
			reads: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan struct{})
			go func() {
				defer close(served)
				ServeConn(context.Background(), server, ServerOptions{HandshakeTimeout: 200 * time.Millisecond, PingInterval: 200 * time.Millisecond, PingTimeout: 200 * time.Millisecond}, echo)
			}()
			if !tt.reads {
				go io.Copy(io.Discard, client)
			}
			tt.peer(t, client)
			within(t, 10*time.Second, "ServeConn", func() bool { <-served; return true })
			if _, err := server.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
				t.Errorf("server conn Write after ServeConn returned = %v, want net.ErrClosed", err)
			}
		})
	}
}
