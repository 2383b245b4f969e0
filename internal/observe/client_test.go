package observe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeObserver serves a fixed list of responses, then ends the stream (or
// waits for the client to go away when the request follows).
type fakeObserver struct {
	observerpb.UnimplementedObserverServer
	responses []*observerpb.GetFlowsResponse

	mu   sync.Mutex
	auth []string // authorization metadata of each call
	reqs []*observerpb.GetFlowsRequest
}

func (f *fakeObserver) GetFlows(req *observerpb.GetFlowsRequest, s grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	md, _ := metadata.FromIncomingContext(s.Context())
	f.mu.Lock()
	f.auth = append(f.auth, strings.Join(md.Get("authorization"), ","))
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	for _, r := range f.responses {
		if err := s.Send(r); err != nil {
			return err
		}
	}
	if req.GetFollow() {
		<-s.Context().Done()
	}
	return nil
}

func serve(t *testing.T, ln net.Listener, obs *fakeObserver, opts ...grpc.ServerOption) {
	t.Helper()
	srv := grpc.NewServer(opts...)
	observerpb.RegisterObserverServer(srv, obs)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
}

func unixTarget(t *testing.T, node string, obs *fakeObserver) Target {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hubble.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, obs)
	return Target{Node: node, Address: "unix://" + path}
}

func flowAt(node string, at time.Duration, pod string) *observerpb.GetFlowsResponse {
	f := tcpFlow(at, nil)
	f.NodeName = node
	f.Source.PodName = pod
	return &observerpb.GetFlowsResponse{Time: f.Time, NodeName: node, ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}}
}

func lostAt(node string, at time.Duration) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{Time: timestamppb.New(t0.Add(at)), NodeName: node,
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: 7}}}
}

// summary names each response: "node/pod" for flows, "node/LOST" for
// lost events.
func summary(rs []*observerpb.GetFlowsResponse) string {
	var s []string
	for _, r := range rs {
		if r.GetLostEvents() != nil {
			s = append(s, r.GetNodeName()+"/LOST")
			continue
		}
		s = append(s, r.GetNodeName()+"/"+r.GetFlow().GetSource().GetPodName())
	}
	return strings.Join(s, " ")
}

func TestObserveMergesNodesByTime(t *testing.T) {
	a := &fakeObserver{responses: []*observerpb.GetFlowsResponse{
		flowAt("a", 1*time.Second, "a1"), lostAt("a", 2*time.Second), flowAt("a", 4*time.Second, "a4"), flowAt("a", 6*time.Second, "a6"),
	}}
	b := &fakeObserver{responses: []*observerpb.GetFlowsResponse{
		flowAt("b", 0, "b0"), flowAt("b", 3*time.Second, "b3"), flowAt("b", 5*time.Second, "b5"),
	}}
	targets := []Target{unixTarget(t, "a", a), unixTarget(t, "b", b)}
	tests := []struct {
		name   string
		number uint64
		want   string
	}{
		{"all", 0, "b/b0 a/a1 a/LOST b/b3 a/a4 b/b5 a/a6"},
		// The last 3 flows of all nodes; the lost events stay.
		{"last 3", 3, "a/LOST a/a4 b/b5 a/a6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []*observerpb.GetFlowsResponse
			err := Observe(t.Context(), targets, &observerpb.GetFlowsRequest{Number: tt.number}, 0,
				func(r *observerpb.GetFlowsResponse) error { got = append(got, r); return nil }, nil)
			if err != nil {
				t.Fatal(err)
			}
			if s := summary(got); s != tt.want {
				t.Errorf("Observe(number %d) = %s, want %s", tt.number, s, tt.want)
			}
		})
	}
	if n := a.reqs[0].GetNumber(); n != 0 || a.auth[0] != "" {
		t.Errorf("first request = %v with authorization %q, want the request as given and no token on a unix socket", a.reqs[0], a.auth[0])
	}
}

func TestObserveFollowInterleaves(t *testing.T) {
	a := &fakeObserver{responses: []*observerpb.GetFlowsResponse{flowAt("a", 1*time.Second, "a1"), flowAt("a", 3*time.Second, "a3")}}
	b := &fakeObserver{responses: []*observerpb.GetFlowsResponse{flowAt("b", 0, "b0"), flowAt("b", 2*time.Second, "b2")}}
	targets := []Target{unixTarget(t, "a", a), unixTarget(t, "b", b)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got []*observerpb.GetFlowsResponse
	err := Observe(ctx, targets, &observerpb.GetFlowsRequest{Follow: true}, 200*time.Millisecond, func(r *observerpb.GetFlowsResponse) error {
		got = append(got, r)
		if len(got) == 4 {
			cancel()
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatalf("Observe follow: %v", err)
	}
	if s, want := summary(got), "b/b0 a/a1 b/b2 a/a3"; s != want {
		t.Errorf("Observe follow = %s, want %s", s, want)
	}
}

func TestObserveReportsFailedNode(t *testing.T) {
	a := &fakeObserver{responses: []*observerpb.GetFlowsResponse{flowAt("a", 0, "a0")}}
	dead := Target{Node: "dead", Address: "unix://" + filepath.Join(t.TempDir(), "nothing.sock")}
	var got []*observerpb.GetFlowsResponse
	var reported []error
	err := Observe(t.Context(), []Target{unixTarget(t, "a", a), dead}, &observerpb.GetFlowsRequest{}, 0,
		func(r *observerpb.GetFlowsResponse) error { got = append(got, r); return nil },
		func(err error) { reported = append(reported, err) })
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Node != "dead" || len(reported) != 1 || summary(got) != "a/a0" {
		t.Errorf("Observe with a dead node = %v (reported %v), flows %s; want node dead's error, and a's flow", err, reported, summary(got))
	}
}

func selfSigned(t *testing.T, name string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestObserveTLSPinsCertAndSendsToken(t *testing.T) {
	cert, certPEM := selfSigned(t, "node-1")
	_, otherPEM := selfSigned(t, "node-1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	obs := &fakeObserver{responses: []*observerpb.GetFlowsResponse{flowAt("node-1", 0, "x")}}
	serve(t, ln, obs, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	addr := ln.Addr().String()

	tests := []struct {
		name    string
		target  Target
		wantErr string
	}{
		{"pinned", Target{Node: "node-1", Address: addr, CertPEM: certPEM, Token: "tok"}, ""},
		{"other certificate", Target{Node: "node-1", Address: addr, CertPEM: otherPEM, Token: "tok"}, "certificate signed by unknown authority"},
		{"wrong node name", Target{Node: "node-2", Address: addr, CertPEM: certPEM, Token: "tok"}, "not node-2"},
		{"no token", Target{Node: "node-1", Address: addr, CertPEM: certPEM}, "--token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			err := Observe(t.Context(), []Target{tt.target}, &observerpb.GetFlowsRequest{}, 0,
				func(*observerpb.GetFlowsResponse) error { n++; return nil }, nil)
			if tt.wantErr == "" {
				if err != nil || n != 1 {
					t.Fatalf("Observe(%s) = %v after %d flows, want 1 flow", tt.name, err, n)
				}
				obs.mu.Lock()
				defer obs.mu.Unlock()
				if !slices.Contains(obs.auth, "Bearer tok") {
					t.Errorf("server saw authorization %q, want %q", obs.auth, "Bearer tok")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Observe(%s) = %v, want an error containing %q", tt.name, err, tt.wantErr)
			}
		})
	}
}
