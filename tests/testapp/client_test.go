package testapp

import (
	"maps"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestGetSummaryAdd(t *testing.T) {
	echo := func(pod string) *EchoResponse { return &EchoResponse{Pod: pod} }
	tests := []struct {
		name      string
		responses []GetResponse
		want      GetSummary
		failed    bool // without allowStatus
		failedAll bool // with allowStatus
	}{
		{
			name:      "none",
			want:      newGetSummary(),
			failed:    false,
			failedAll: false,
		},
		{
			name: "spread over pods",
			responses: []GetResponse{
				{Status: 200, Proto: "HTTP/1.1", Echo: echo("a")},
				{Status: 200, Proto: "HTTP/1.1", Echo: echo("b")},
				{Status: 200, Proto: "HTTP/2.0", Echo: echo("a")},
			},
			want: GetSummary{
				Requests: 3, OK: 3, Errors: []string{},
				StatusCodes: map[int]int{200: 3},
				Pods:        map[string]int{"a": 2, "b": 1},
				Protos:      map[string]int{"HTTP/1.1": 2, "HTTP/2.0": 1},
			},
		},
		{
			name: "non-2xx and errors",
			responses: []GetResponse{
				{Status: 503, Proto: "HTTP/1.1", Echo: echo("a")},
				{Status: 204, Proto: "HTTP/1.1", Body: ""},
				{Error: "dial tcp: connection refused"},
			},
			want: GetSummary{
				Requests: 3, OK: 1, Errors: []string{"dial tcp: connection refused"},
				StatusCodes: map[int]int{503: 1, 204: 1},
				Pods:        map[string]int{"a": 1},
				Protos:      map[string]int{"HTTP/1.1": 2},
			},
			failed:    true,
			failedAll: true,
		},
		{
			name:      "only non-2xx",
			responses: []GetResponse{{Status: 503, Proto: "HTTP/1.1", Body: "busy"}},
			want: GetSummary{
				Requests: 1, Errors: []string{},
				StatusCodes: map[int]int{503: 1},
				Pods:        map[string]int{},
				Protos:      map[string]int{"HTTP/1.1": 1},
			},
			failed:    true,
			failedAll: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newGetSummary()
			for _, r := range tt.responses {
				got.add(r, false)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("summary = %+v, want %+v", got, tt.want)
			}
			if f := got.Failed(false); f != tt.failed {
				t.Errorf("Failed(false) = %t, want %t", f, tt.failed)
			}
			if f := got.Failed(true); f != tt.failedAll {
				t.Errorf("Failed(true) = %t, want %t", f, tt.failedAll)
			}
		})
	}
}

func TestParseHeaders(t *testing.T) {
	tests := []struct {
		in      []string
		want    http.Header
		wantErr bool
	}{
		{in: nil, want: http.Header{}},
		{in: []string{"x-a=1", "X-A=2", "b=c=d", "e="}, want: http.Header{"X-A": {"1", "2"}, "B": {"c=d"}, "E": {""}}},
		{in: []string{"novalue"}, wantErr: true},
		{in: []string{"=v"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, ","), func(t *testing.T) {
			got, err := ParseHeaders(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseHeaders(%q) error = %v, want error %t", tt.in, err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseHeaders(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestGet(t *testing.T) {
	srv, _ := startEcho(t, EchoConfig{TLSAddr: "127.0.0.1:0", Pod: testPod})
	plain := "http://" + srv.Addr().String()
	secure := "https://" + srv.TLSAddr().String()

	tests := []struct {
		name        string
		cfg         GetConfig
		wantOK      int
		wantCodes   map[int]int
		wantProtos  map[string]int
		wantFailed  bool
		wantRemotes int // distinct client addresses the server saw
	}{
		{
			name:        "new connection per request",
			cfg:         GetConfig{URL: plain + "/", Count: 3},
			wantOK:      3,
			wantCodes:   map[int]int{200: 3},
			wantProtos:  map[string]int{"HTTP/1.1": 3},
			wantRemotes: 3,
		},
		{
			name:        "keepalive",
			cfg:         GetConfig{URL: plain + "/", Count: 3, KeepAlive: true},
			wantOK:      3,
			wantCodes:   map[int]int{200: 3},
			wantProtos:  map[string]int{"HTTP/1.1": 3},
			wantRemotes: 1,
		},
		{
			name:        "h2c status",
			cfg:         GetConfig{URL: plain + "/status/503", Count: 2, HTTPOptions: HTTPOptions{H2C: true}},
			wantCodes:   map[int]int{503: 2},
			wantProtos:  map[string]int{"HTTP/2.0": 2},
			wantFailed:  true,
			wantRemotes: 2,
		},
		{
			name:        "tls h2 with host header",
			cfg:         GetConfig{URL: secure + "/", Count: 2, HTTPOptions: HTTPOptions{HTTP2: true, Insecure: true, Header: http.Header{"Host": {"echo.shop"}}}},
			wantOK:      2,
			wantCodes:   map[int]int{200: 2},
			wantProtos:  map[string]int{"HTTP/2.0": 2},
			wantRemotes: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Responses = true
			got, err := Get(t.Context(), tt.cfg)
			if err != nil {
				t.Fatalf("Get() = %v", err)
			}
			if got.Requests != tt.cfg.Count || got.OK != tt.wantOK || len(got.Errors) != 0 {
				t.Errorf("Get() requests, ok, errors = %d, %d, %q, want %d, %d, none", got.Requests, got.OK, got.Errors, tt.cfg.Count, tt.wantOK)
			}
			if !maps.Equal(got.StatusCodes, tt.wantCodes) || !maps.Equal(got.Protos, tt.wantProtos) {
				t.Errorf("Get() statusCodes, protos = %v, %v, want %v, %v", got.StatusCodes, got.Protos, tt.wantCodes, tt.wantProtos)
			}
			if want := map[string]int{testPod.Name: tt.cfg.Count}; !maps.Equal(got.Pods, want) {
				t.Errorf("Get() pods = %v, want %v", got.Pods, want)
			}
			if f := got.Failed(false); f != tt.wantFailed {
				t.Errorf("Failed(false) = %t, want %t", f, tt.wantFailed)
			}
			var remotes []string
			for _, r := range got.Responses {
				if r.Echo == nil {
					t.Fatalf("response %+v has no echo body", r)
				}
				if h := tt.cfg.Header.Get("Host"); h != "" && r.Echo.Host != h {
					t.Errorf("echo host = %q, want %q", r.Echo.Host, h)
				}
				if !slices.Contains(remotes, r.Echo.RemoteAddr) {
					remotes = append(remotes, r.Echo.RemoteAddr)
				}
			}
			if len(remotes) != tt.wantRemotes {
				t.Errorf("server saw %d client addresses %v, want %d", len(remotes), remotes, tt.wantRemotes)
			}
		})
	}
}

func TestGetErrors(t *testing.T) {
	srv, _ := startEcho(t, EchoConfig{Pod: testPod})
	for _, cfg := range []GetConfig{
		{URL: "127.0.0.1:80/"},
		{URL: "ftp://127.0.0.1/"},
		{URL: "http://" + srv.Addr().String(), HTTPOptions: HTTPOptions{HTTP2: true}},
		{URL: "https://" + srv.Addr().String(), HTTPOptions: HTTPOptions{H2C: true}},
	} {
		t.Run(cfg.URL, func(t *testing.T) {
			if _, err := Get(t.Context(), cfg); err == nil {
				t.Errorf("Get(%+v) error = nil, want one", cfg)
			}
		})
	}
	t.Run("unanswered", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		got, err := Get(t.Context(), GetConfig{URL: "http://" + addr + "/", Count: 2})
		if err != nil {
			t.Fatalf("Get() = %v", err)
		}
		if got.Requests != 2 || len(got.Errors) != 2 || !got.Failed(true) {
			t.Errorf("Get(closed port) = %+v, want 2 requests, 2 errors", got)
		}
	})
}
