package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
)

// fakeEnroller records requests and answers with its configured results.
type fakeEnroller struct {
	addResp  cniv1.Response
	addErr   error
	checkErr error
	delErr   error
	block    bool // CNIAdd waits for its context to end

	mu   sync.Mutex // guards the fields below
	adds []cniv1.AddRequest
	dels []cniv1.DelRequest
}

func (f *fakeEnroller) CNIAdd(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	f.mu.Lock()
	f.adds = append(f.adds, req)
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return cniv1.Response{}, ctx.Err()
	}
	return f.addResp, f.addErr
}

func (f *fakeEnroller) CNIDel(ctx context.Context, req cniv1.DelRequest) error {
	f.mu.Lock()
	f.dels = append(f.dels, req)
	f.mu.Unlock()
	return f.delErr
}

func (f *fakeEnroller) CNICheck(ctx context.Context, req cniv1.AddRequest) error { return f.checkErr }

func testLog(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tbWriter{tb}, nil))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

const validAdd = `{"version":"v1","containerID":"c1","netns":"/var/run/netns/p1","ifName":"eth0","podNamespace":"shop","podName":"web-1","podUID":"u1","ips":["10.244.0.5"]}`

func TestHandler(t *testing.T) {
	tests := map[string]struct {
		enroller   *fakeEnroller
		timeout    time.Duration
		method     string
		path       string
		body       string
		wantStatus int
		wantResp   cniv1.Response
		wantErrSub string // substring of Response.Error
	}{
		"add ok": {
			enroller: &fakeEnroller{addResp: cniv1.Response{Enrolled: true}},
			path:     cniv1.PathAdd, body: validAdd,
			wantStatus: http.StatusOK, wantResp: cniv1.Response{Enrolled: true},
		},
		"add unknown fields ignored": {
			enroller: &fakeEnroller{addResp: cniv1.Response{Enrolled: true}},
			path:     cniv1.PathAdd, body: strings.Replace(validAdd, `"version"`, `"future":1,"version"`, 1),
			wantStatus: http.StatusOK, wantResp: cniv1.Response{Enrolled: true},
		},
		"add declined": {
			enroller: &fakeEnroller{addResp: cniv1.Response{Reason: "listens on 15001"}},
			path:     cniv1.PathAdd, body: validAdd,
			wantStatus: http.StatusOK, wantResp: cniv1.Response{Reason: "listens on 15001"},
		},
		"wrong method": {
			method: http.MethodGet, path: cniv1.PathAdd,
			wantStatus: http.StatusMethodNotAllowed, wantErrSub: "method GET not allowed on /v1/pods/add: use POST",
		},
		"unknown path": {
			path: "/v1/pods/frobnicate", body: validAdd,
			wantStatus: http.StatusNotFound, wantErrSub: "unknown path /v1/pods/frobnicate",
		},
		"bad json": {
			path: cniv1.PathAdd, body: `{"version":"v1",`,
			wantStatus: http.StatusBadRequest, wantErrSub: "decode request: unexpected EOF",
		},
		"not an object": {
			path: cniv1.PathAdd, body: `["v1"]`,
			wantStatus: http.StatusBadRequest, wantErrSub: "decode request: json: cannot unmarshal array",
		},
		"empty body": {
			path: cniv1.PathDel, body: "",
			wantStatus: http.StatusBadRequest, wantErrSub: "decode request: empty body",
		},
		"trailing data": {
			path: cniv1.PathAdd, body: validAdd + `{}`,
			wantStatus: http.StatusBadRequest, wantErrSub: "trailing data",
		},
		"wrong version": {
			path: cniv1.PathAdd, body: strings.Replace(validAdd, `"v1"`, `"v2"`, 1),
			wantStatus: http.StatusBadRequest, wantErrSub: `unsupported protocol version "v2" (this agent speaks "v1")`,
		},
		"missing version": {
			path: cniv1.PathCheck, body: `{"containerID":"c1"}`,
			wantStatus: http.StatusBadRequest, wantErrSub: `unsupported protocol version ""`,
		},
		"missing netns": {
			path: cniv1.PathAdd, body: strings.Replace(validAdd, `"/var/run/netns/p1"`, `""`, 1),
			wantStatus: http.StatusBadRequest, wantErrSub: "field netns: required",
		},
		"bad ip": {
			path: cniv1.PathAdd, body: strings.Replace(validAdd, `"10.244.0.5"`, `"10.244.0.500"`, 1),
			wantStatus: http.StatusBadRequest, wantErrSub: "decode request",
		},
		"too large": {
			path: cniv1.PathAdd, body: `{"version":"v1","podName":"` + strings.Repeat("x", cniv1.MaxBodyBytes) + `"}`,
			wantStatus: http.StatusRequestEntityTooLarge, wantErrSub: "request body too large",
		},
		"add enroller fails": {
			enroller: &fakeEnroller{addErr: errors.New("ztunnel not connected")},
			path:     cniv1.PathAdd, body: validAdd,
			wantStatus: http.StatusInternalServerError, wantErrSub: "enroll pod shop/web-1: ztunnel not connected",
		},
		"add times out": {
			enroller: &fakeEnroller{block: true}, timeout: 10 * time.Millisecond,
			path: cniv1.PathAdd, body: validAdd,
			wantStatus: http.StatusGatewayTimeout, wantErrSub: "context deadline exceeded",
		},
		"check enrolled": {
			path: cniv1.PathCheck, body: validAdd,
			wantStatus: http.StatusOK, wantResp: cniv1.Response{Enrolled: true},
		},
		"check not enrolled": {
			enroller: &fakeEnroller{checkErr: fmt.Errorf("netns cookie 42 not in mesh_netns: %w", ErrNotEnrolled)},
			path:     cniv1.PathCheck, body: validAdd,
			wantStatus: http.StatusOK, wantResp: cniv1.Response{Error: "netns cookie 42 not in mesh_netns: pod not enrolled"},
		},
		"check cannot tell": {
			enroller: &fakeEnroller{checkErr: errors.New("map lookup: EPERM")},
			path:     cniv1.PathCheck, body: validAdd,
			wantStatus: http.StatusInternalServerError, wantErrSub: "check pod shop/web-1: map lookup: EPERM",
		},
		"del without netns": {
			path: cniv1.PathDel, body: `{"version":"v1","containerID":"c1","podNamespace":"shop","podName":"web-1"}`,
			wantStatus: http.StatusOK,
		},
		"del without identity": {
			path: cniv1.PathDel, body: `{"version":"v1"}`,
			wantStatus: http.StatusBadRequest, wantErrSub: "field containerID",
		},
		"del fails": {
			enroller: &fakeEnroller{delErr: errors.New("close netns")},
			path:     cniv1.PathDel, body: `{"version":"v1","containerID":"c1"}`,
			wantStatus: http.StatusInternalServerError, wantErrSub: "release pod /: close netns",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			e := tt.enroller
			if e == nil {
				e = &fakeEnroller{}
			}
			s := New("/unused", e, testLog(t))
			s.RequestTimeout = tt.timeout
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.wantStatus {
				t.Errorf("%s %s = HTTP %d, want %d (body %s)", method, tt.path, rec.Code, tt.wantStatus, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != cniv1.ContentType {
				t.Errorf("Content-Type = %q, want %q", ct, cniv1.ContentType)
			}
			var got cniv1.Response
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decode answer %q: %v", rec.Body, err)
			}
			if tt.wantErrSub != "" {
				if !strings.Contains(got.Error, tt.wantErrSub) {
					t.Errorf("answer error = %q, want it to contain %q", got.Error, tt.wantErrSub)
				}
				return
			}
			if got != tt.wantResp {
				t.Errorf("answer = %+v, want %+v", got, tt.wantResp)
			}
		})
	}
}

func TestHandlerPassesRequest(t *testing.T) {
	e := &fakeEnroller{addResp: cniv1.Response{Enrolled: true}}
	rec := httptest.NewRecorder()
	New("/unused", e, testLog(t)).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, cniv1.PathAdd, strings.NewReader(validAdd)))
	want := cniv1.AddRequest{
		Version: "v1", ContainerID: "c1", Netns: "/var/run/netns/p1", IfName: "eth0",
		PodNamespace: "shop", PodName: "web-1", PodUID: "u1", IPs: []netip.Addr{netip.MustParseAddr("10.244.0.5")},
	}
	if len(e.adds) != 1 || fmt.Sprint(e.adds[0]) != fmt.Sprint(want) {
		t.Errorf("enroller got %+v, want [%+v]", e.adds, want)
	}
}

// startServer runs a Server on path until the test ends and waits until it
// listens.
func startServer(t *testing.T, path string, e Enroller) (*Server, <-chan error) {
	t.Helper()
	s := New(path, e, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run = %v before listening", err)
	}
	return s, done
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

func TestRunSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "weft")
	path := filepath.Join(dir, "cni.sock")

	// A stale socket: bound, then its listener gone.
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	e := &fakeEnroller{addResp: cniv1.Response{Enrolled: true}}
	s := New(path, e, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run = %v, want it to replace the stale socket", err)
	}

	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	resp, err := unixClient(path).Post("http://weft-agent"+cniv1.PathAdd, cniv1.ContentType, strings.NewReader(validAdd))
	if err != nil {
		t.Fatalf("POST add: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"enrolled":true`) {
		t.Errorf("POST add = %d %s, want 200 enrolled", resp.StatusCode, body)
	}

	// A second server must not steal a live socket.
	err = New(path, e, testLog(t)).Run(context.Background())
	if !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second Run = %v, want ErrSocketInUse", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v after cancel, want nil", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after shutdown: %v, want it removed", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("socket dir after shutdown holds %v, want nothing", entries)
	}
}

func TestRunCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	startServer(t, filepath.Join(dir, "cni.sock"), &fakeEnroller{})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got&0o027 != 0 {
		t.Errorf("socket dir mode = %v, want at most 0750", got)
	}
}

func TestRunRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cni.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := New(path, &fakeEnroller{}, testLog(t)).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Run over a regular file = %v, want a 'not a socket' error", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "precious" {
		t.Errorf("regular file clobbered: %q", data)
	}
}

// TestShutdownLetsRequestsFinish: a request in flight when Run's context
// ends is answered, not cut.
func TestShutdownLetsRequestsFinish(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cni.sock")
	release := make(chan struct{})
	entered := make(chan struct{})
	e := &gateEnroller{entered: entered, release: release}
	s := New(path, e, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready()

	got := make(chan int, 1)
	go func() {
		resp, err := unixClient(path).Post("http://weft-agent"+cniv1.PathAdd, cniv1.ContentType, strings.NewReader(validAdd))
		if err != nil {
			got <- -1
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	<-entered
	cancel()
	close(release)
	if code := <-got; code != http.StatusOK {
		t.Errorf("in-flight request answered %d, want 200", code)
	}
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

type gateEnroller struct {
	fakeEnroller
	entered chan struct{}
	release chan struct{}
}

func (g *gateEnroller) CNIAdd(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	close(g.entered)
	<-g.release
	return cniv1.Response{Enrolled: true}, nil
}

func FuzzDecodeAdd(f *testing.F) {
	f.Add([]byte(validAdd))
	f.Add([]byte(`{"version":"v1"}`))
	f.Add([]byte(`{"ips":["::1","1.2.3.4"]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeAdd(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		if verr := req.Validate(); verr != nil {
			t.Fatalf("decodeAdd(%q) accepted %+v, which fails Validate: %v", data, req, verr)
		}
		// What was accepted survives a round trip.
		out, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("marshal %+v: %v", req, err)
		}
		again, err := decodeAdd(strings.NewReader(string(out)))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(req) {
			t.Fatalf("round trip of %q = %+v, %v; want %+v", out, again, err, req)
		}
	})
}

func FuzzDecodeDel(f *testing.F) {
	f.Add([]byte(`{"version":"v1","containerID":"c1"}`))
	f.Add([]byte(`{"version":"v1","podNamespace":"a","podName":"b"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeDel(strings.NewReader(string(data)))
		if err == nil && req.Validate() != nil {
			t.Fatalf("decodeDel(%q) accepted an invalid request %+v", data, req)
		}
	})
}
