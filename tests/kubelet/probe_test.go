//go:build linux

package kubelet

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestProbeThresholds(t *testing.T) {
	type step struct {
		ok      bool
		want    probeResult
		changed bool
	}
	tests := map[string]struct {
		probe corev1.Probe
		kind  probeKind
		steps []step
	}{
		"readiness starts failed, one success flips": {
			kind: probeReadiness,
			steps: []step{{true, resultSuccess, true}, {true, resultSuccess, false},
				{false, resultSuccess, false}, {false, resultSuccess, false}, {false, resultFailure, true}},
		},
		"liveness needs failureThreshold in a row": {
			probe: corev1.Probe{FailureThreshold: 2},
			kind:  probeLiveness,
			steps: []step{{false, resultSuccess, false}, {true, resultSuccess, false},
				{false, resultSuccess, false}, {false, resultFailure, true}},
		},
		"success threshold": {
			probe: corev1.Probe{SuccessThreshold: 3, FailureThreshold: 1},
			kind:  probeReadiness,
			steps: []step{{true, resultFailure, false}, {true, resultFailure, false}, {true, resultSuccess, true},
				{false, resultFailure, true}, {true, resultFailure, false}},
		},
		"startup from unknown": {
			probe: corev1.Probe{FailureThreshold: 2},
			kind:  probeStartup,
			steps: []step{{false, resultUnknown, false}, {false, resultFailure, true}},
		},
		"startup success": {
			kind:  probeStartup,
			steps: []step{{true, resultSuccess, true}},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			th := newProbeThresholds(&tt.probe, tt.kind)
			for i, s := range tt.steps {
				got, changed := th.observe(s.ok)
				if got != s.want || changed != s.changed {
					t.Fatalf("step %d: observe(%v) = %v, %v, want %v, %v", i, s.ok, got, changed, s.want, s.changed)
				}
			}
		})
	}
}

func splitHostPort(tb testing.TB, rawURL string) (string, int) {
	tb.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		tb.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(u.Host)
	n, _ := strconv.Atoi(port)
	return host, n
}

func TestProbeHTTP(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Probe") != "yes" || r.Host != "svc.example" || r.UserAgent() != probeUserAgent {
			http.Error(w, "bad headers", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", http.StatusServiceUnavailable) })
	mux.HandleFunc("/redirect-local", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/fail", http.StatusFound) })
	mux.HandleFunc("/redirect-away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.invalid/", http.StatusFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(mux)
	defer tlsSrv.Close()
	host, port := splitHostPort(t, srv.URL)
	_, tlsPort := splitHostPort(t, tlsSrv.URL)
	ctr := &corev1.Container{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	headers := []corev1.HTTPHeader{{Name: "X-Probe", Value: "yes"}, {Name: "Host", Value: "svc.example"}}
	tests := map[string]struct {
		get    corev1.HTTPGetAction
		wantOK bool
	}{
		"named port with headers":  {get: corev1.HTTPGetAction{Path: "/ok", Port: intstr.FromString("http"), HTTPHeaders: headers}, wantOK: true},
		"missing headers":          {get: corev1.HTTPGetAction{Path: "/ok", Port: intstr.FromInt32(int32(port))}},
		"server error":             {get: corev1.HTTPGetAction{Path: "fail", Port: intstr.FromInt32(int32(port))}},
		"local redirect followed":  {get: corev1.HTTPGetAction{Path: "/redirect-local", Port: intstr.FromInt32(int32(port))}},
		"remote redirect succeeds": {get: corev1.HTTPGetAction{Path: "/redirect-away", Port: intstr.FromInt32(int32(port))}, wantOK: true},
		"https unverified": {get: corev1.HTTPGetAction{Path: "/ok", Port: intstr.FromInt32(int32(tlsPort)),
			Scheme: corev1.URISchemeHTTPS, HTTPHeaders: headers}, wantOK: true},
		"timeout":      {get: corev1.HTTPGetAction{Path: "/slow", Port: intstr.FromInt32(int32(port))}},
		"unknown name": {get: corev1.HTTPGetAction{Path: "/ok", Port: intstr.FromString("nope")}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := probeHTTP(context.Background(), &tt.get, host, ctr, 300*time.Millisecond)
			if (err == nil) != tt.wantOK {
				t.Errorf("probeHTTP(%s) = %v, want ok %v", tt.get.Path, err, tt.wantOK)
			}
		})
	}
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	defer ln.Close()
	ctr := &corev1.Container{}
	if err := probeTCP(context.Background(), &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}, "127.0.0.1", ctr, time.Second); err != nil {
		t.Errorf("probeTCP(open) = %v, want nil", err)
	}
	if err := probeTCP(context.Background(), &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(closedPort))}, "127.0.0.1", ctr, time.Second); err == nil {
		t.Errorf("probeTCP(closed) = nil, want error")
	}
}

// grpcHealthServer answers grpc.health.v1.Health/Check with status for the
// services it knows and NOT_FOUND (5) otherwise.
func grpcHealthServer(tb testing.TB, status map[string]uint64) (string, int) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/grpc.health.v1.Health/Check" || r.Header.Get("Content-Type") != "application/grpc" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		service := ""
		if len(body) > 5 && len(body[5:]) > 2 {
			service = string(body[7:])
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		st, ok := status[service]
		if !ok {
			w.Header().Set("Grpc-Status", "5")
			return
		}
		msg := binary.AppendUvarint([]byte{0x08}, st)
		frame := make([]byte, 5)
		binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
		_, _ = w.Write(append(frame, msg...))
		w.Header().Set("Grpc-Status", "0")
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	tb.Cleanup(srv.Close)
	return splitHostPort(tb, srv.URL)
}

func TestProbeGRPC(t *testing.T) {
	host, port := grpcHealthServer(t, map[string]uint64{"": 1, "down": 2})
	tests := map[string]struct {
		service *string
		wantOK  bool
	}{
		"overall serving": {wantOK: true},
		"not serving":     {service: ptr.To("down")},
		"unknown service": {service: ptr.To("nope")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := probeGRPC(context.Background(), &corev1.GRPCAction{Port: int32(port), Service: tt.service}, host, time.Second)
			if (err == nil) != tt.wantOK {
				t.Errorf("probeGRPC(%v) = %v, want ok %v", tt.service, err, tt.wantOK)
			}
		})
	}
}
