package testapp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var testPod = PodInfo{Name: "echo-0", Namespace: "shop", Node: "node-a", IP: "10.1.2.3"}

// client returns an HTTP client speaking only the given protocols.
func client(tb testing.TB, p *http.Protocols) *http.Client {
	tb.Helper()
	tr := &http.Transport{
		Protocols:       p,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "echo.shop.svc"},
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// fetch GETs url and decodes the echo body.
func fetch(tb testing.TB, c *http.Client, url string) (*http.Response, EchoResponse) {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("X-Test", "a")
	req.Header.Add("X-Test", "b")
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var e EchoResponse
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		tb.Fatalf("GET %s: decode body: %v", url, err)
	}
	return resp, e
}

func TestEchoProtocols(t *testing.T) {
	srv, _ := startEcho(t, EchoConfig{TLSAddr: "127.0.0.1:0", Pod: testPod})
	plain := "http://" + srv.Addr().String()
	secure := "https://" + srv.TLSAddr().String()

	tests := []struct {
		name          string
		url           string
		protocols     *http.Protocols
		wantProto     string
		wantTLS       bool
		wantSNI       string
		wantRespProto string
	}{
		{name: "http1", url: plain, protocols: protocols(true, false, false), wantProto: "HTTP/1.1", wantRespProto: "HTTP/1.1"},
		{name: "h2c prior knowledge", url: plain, protocols: protocols(false, false, true), wantProto: "HTTP/2.0", wantRespProto: "HTTP/2.0"},
		{name: "tls http1", url: secure, protocols: protocols(true, false, false), wantProto: "HTTP/1.1", wantTLS: true, wantSNI: "echo.shop.svc", wantRespProto: "HTTP/1.1"},
		{name: "tls h2", url: secure, protocols: protocols(false, true, false), wantProto: "HTTP/2.0", wantTLS: true, wantSNI: "echo.shop.svc", wantRespProto: "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, got := fetch(t, client(t, tt.protocols), tt.url+"/some/path")
			if resp.StatusCode != http.StatusOK || resp.Proto != tt.wantRespProto {
				t.Errorf("response = %d %s, want 200 %s", resp.StatusCode, resp.Proto, tt.wantRespProto)
			}
			want := EchoResponse{
				Pod: "echo-0", Namespace: "shop", Node: "node-a", PodIP: "10.1.2.3",
				Method: "GET", Path: "/some/path", Proto: tt.wantProto,
				TLS: tt.wantTLS, TLSServerName: tt.wantSNI,
			}
			// Fields that depend on the connection are checked apart.
			host, remote, headers := got.Host, got.RemoteAddr, got.Headers
			got.Host, got.RemoteAddr, got.Headers = "", "", nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("echo = %+v, want %+v", got, want)
			}
			if wantHost := strings.TrimPrefix(strings.TrimPrefix(tt.url, "http://"), "https://"); host != wantHost {
				t.Errorf("echo host = %q, want %q", host, wantHost)
			}
			if !strings.HasPrefix(remote, "127.0.0.1:") {
				t.Errorf("echo remoteAddr = %q, want 127.0.0.1:PORT", remote)
			}
			if headers["X-Test"] != "a, b" {
				t.Errorf("echo headers[X-Test] = %q, want %q", headers["X-Test"], "a, b")
			}
		})
	}
}

func TestEchoPaths(t *testing.T) {
	srv, _ := startEcho(t, EchoConfig{Pod: testPod})
	base := "http://" + srv.Addr().String()
	c := client(t, protocols(true, false, false))

	tests := []struct {
		name     string
		path     string
		wantCode int
		wantBody string // exact body, or "" for an echo body of path
	}{
		{name: "healthz", path: "/healthz", wantCode: 200, wantBody: "ok"},
		{name: "status 503", path: "/status/503", wantCode: 503},
		{name: "status 201", path: "/status/201", wantCode: 201},
		{name: "status 204 has no body", path: "/status/204", wantCode: 204, wantBody: "-"},
		{name: "status not a number", path: "/status/abc", wantCode: 400, wantBody: "invalid status code \"abc\"\n"},
		{name: "status out of range", path: "/status/99", wantCode: 400, wantBody: "invalid status code \"99\"\n"},
		{name: "delay", path: "/delay/5", wantCode: 200},
		{name: "bad delay", path: "/delay/-1", wantCode: 400, wantBody: "invalid delay \"-1\"\n"},
		{name: "deeper status path echoes", path: "/status/503/x", wantCode: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", tt.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("GET %s: read body: %v", tt.path, err)
			}
			if resp.StatusCode != tt.wantCode {
				t.Errorf("GET %s: status = %d, want %d", tt.path, resp.StatusCode, tt.wantCode)
			}
			switch tt.wantBody {
			case "":
				var e EchoResponse
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("GET %s: decode body %q: %v", tt.path, body, err)
				}
				if e.Path != tt.path || e.Pod != testPod.Name {
					t.Errorf("GET %s: echo path, pod = %q, %q, want %q, %q", tt.path, e.Path, e.Pod, tt.path, testPod.Name)
				}
			case "-":
				if len(body) != 0 {
					t.Errorf("GET %s: body = %q, want none", tt.path, body)
				}
			default:
				if string(body) != tt.wantBody {
					t.Errorf("GET %s: body = %q, want %q", tt.path, body, tt.wantBody)
				}
			}
		})
	}
}

func TestEchoCountsBody(t *testing.T) {
	srv, _ := startEcho(t, EchoConfig{Pod: testPod})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+srv.Addr().String()+"/upload", bytes.NewReader(make([]byte, 1234)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client(t, protocols(true, false, false)).Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	var e EchoResponse
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("decode body: %v", err)
	}
	if e.Method != "POST" || e.BodyBytes != 1234 {
		t.Errorf("echo method, bodyBytes = %q, %d, want POST, 1234", e.Method, e.BodyBytes)
	}
}

func TestEchoDelayHonoursCancel(t *testing.T) {
	srv, stop := startEcho(t, EchoConfig{Pod: testPod, ShutdownTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.Addr().String()+"/delay/600000", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client(t, protocols(true, false, false)).Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET /delay/600000 = %v, want %v", err, context.DeadlineExceeded)
	}
	// The handler must have given up with the client: otherwise graceful
	// shutdown would wait for it for a minute.
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

func TestEchoH2CUpgrade(t *testing.T) {
	srv, stop := startEcho(t, EchoConfig{Pod: testPod})
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = io.WriteString(c, "GET /upgrade HTTP/1.1\r\nHost: echo\r\n"+
		"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "h2c" {
		t.Fatalf("upgrade response = %d, Upgrade %q, want 101, h2c", resp.StatusCode, resp.Header.Get("Upgrade"))
	}

	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, br)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// Stream 1 answers the upgraded HTTP/1.1 request.
	status, first := readH2Response(t, fr, 1)
	if status != "200" || first.Path != "/upgrade" || first.Proto != "HTTP/1.1" {
		t.Errorf("stream 1 = %s, path %q, proto %q, want 200, /upgrade, HTTP/1.1", status, first.Path, first.Proto)
	}

	// Stream 3 is a plain HTTP/2 request on the upgraded connection.
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "echo"}, {Name: ":path", Value: "/second"},
	} {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	status, second := readH2Response(t, fr, 3)
	if status != "200" || second.Path != "/second" || second.Proto != "HTTP/2.0" {
		t.Errorf("stream 3 = %s, path %q, proto %q, want 200, /second, HTTP/2.0", status, second.Path, second.Proto)
	}

	// Shutdown must close the hijacked connection rather than leave it.
	if err := stop(); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	for {
		if _, err := fr.ReadFrame(); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
				t.Errorf("read after shutdown = %v, want EOF", err)
			}
			break
		}
	}
}

// readH2Response reads frames until stream id ends and returns its :status
// and decoded echo body.
func readH2Response(tb testing.TB, fr *http2.Framer, id uint32) (string, EchoResponse) {
	tb.Helper()
	var status string
	var body bytes.Buffer
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			tb.Fatalf("read frame for stream %d: %v", id, err)
		}
		if f.Header().StreamID != id {
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
			if f.StreamEnded() {
				return status, EchoResponse{}
			}
		case *http2.DataFrame:
			body.Write(f.Data())
			if f.StreamEnded() {
				var e EchoResponse
				if err := json.Unmarshal(body.Bytes(), &e); err != nil {
					tb.Fatalf("decode stream %d body %q: %v", id, body.Bytes(), err)
				}
				return status, e
			}
		case *http2.RSTStreamFrame:
			tb.Fatalf("stream %d reset: %v", id, f.ErrCode)
		}
	}
}

func TestLoadOrGenerateCert(t *testing.T) {
	tests := []struct {
		name      string
		cert, key string
		wantErr   bool
	}{
		{name: "generated", wantErr: false},
		{name: "cert without key", cert: "cert.pem", wantErr: true},
		{name: "missing files", cert: "/nonexistent/cert.pem", key: "/nonexistent/key.pem", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := loadOrGenerateCert(tt.cert, tt.key, testPod, time.Now())
			if (err != nil) != tt.wantErr {
				t.Fatalf("loadOrGenerateCert(%q, %q) error = %v, want error %t", tt.cert, tt.key, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if err := cert.Leaf.VerifyHostname(testPod.Name); err != nil {
				t.Errorf("VerifyHostname(%q) = %v", testPod.Name, err)
			}
			if err := cert.Leaf.VerifyHostname(testPod.IP); err != nil {
				t.Errorf("VerifyHostname(%q) = %v", testPod.IP, err)
			}
		})
	}
}
