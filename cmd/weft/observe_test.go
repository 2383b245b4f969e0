package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fakeObserver answers GetFlows with fixed flows and records the request.
type fakeObserver struct {
	observerpb.UnimplementedObserverServer
	flows []*flowpb.Flow
	got   chan *observerpb.GetFlowsRequest
}

func (f *fakeObserver) GetFlows(req *observerpb.GetFlowsRequest, s grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	f.got <- req
	for _, fl := range f.flows {
		if err := s.Send(&observerpb.GetFlowsResponse{Time: fl.Time, NodeName: fl.NodeName, ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: fl}}); err != nil {
			return err
		}
	}
	return s.Send(&observerpb.GetFlowsResponse{Time: timestamppb.New(time.Unix(1, 0)), NodeName: "node-1",
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{Source: flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, NumEventsLost: 3}}})
}

// TestObserveUnixSocket runs `weft observe --server unix://…` against a
// flow API on a unix socket: the filters reach the server, flows and lost
// events reach stdout.
func TestObserveUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hubble.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	obs := &fakeObserver{got: make(chan *observerpb.GetFlowsRequest, 1), flows: []*flowpb.Flow{{
		Time: timestamppb.New(time.Unix(0, 0)), NodeName: "node-1", Verdict: flowpb.Verdict_DROPPED,
		IP:          &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"},
		L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 1234, DestinationPort: 80}}},
		Source:      &flowpb.Endpoint{Namespace: "shop", PodName: "web"},
		Destination: &flowpb.Endpoint{Namespace: "shop", PodName: "api"},
		EventType:   &flowpb.CiliumEventType{Type: 1, SubType: 133}, IsReply: wrapperspb.Bool(false),
		Summary: "TCP Flags: SYN; denied: no policy",
	}}}
	srv := grpc.NewServer()
	observerpb.RegisterObserverServer(srv, obs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	t.Setenv("TZ", "UTC")

	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"observe", "--server", "unix://" + sock, "--verdict", "DROPPED", "--from-pod", "shop/web", "--last", "5", "--print-node-name=false"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("weft observe = exit %d, stderr %q", code, stderr.String())
	}
	req := <-obs.got
	if req.GetNumber() != 5 || len(req.GetWhitelist()) != 1 || req.GetWhitelist()[0].GetVerdict()[0] != flowpb.Verdict_DROPPED ||
		req.GetWhitelist()[0].GetSourcePod()[0] != "shop/web" {
		t.Errorf("server got %v, want the last 5 DROPPED flows from shop/web", req)
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], ": shop/web:1234 (unknown) -> shop/api:80 (unknown) Policy denied DROPPED (TCP Flags: SYN; denied: no policy)") ||
		!strings.HasSuffix(lines[1], " EVENTS LOST: OBSERVER_EVENTS_QUEUE CPU(0) 3") {
		t.Errorf("weft observe printed\n%s\nwant the dropped flow and the lost events, compact", stdout.String())
	}
}

func TestNewCommandsUsage(t *testing.T) {
	// A kubeconfig without credentials: enough to load, never contacted.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"observe bad output", []string{"observe", "-o", "yaml"}, exitUsage, `invalid --output "yaml": want compact, table, dict or json`},
		{"observe bad verdict", []string{"observe", "--verdict", "NOPE"}, exitUsage, `invalid --verdict "NOPE"`},
		{"observe bad color", []string{"observe", "--color", "sometimes"}, exitUsage, `invalid --color "sometimes"`},
		{"observe bad since", []string{"observe", "--since", "yesterday"}, exitUsage, `invalid --since`},
		{"observe node and server", []string{"observe", "--node", "a", "--server", "b:1"}, exitUsage, "--node and --server cannot be combined"},
		{"observe needs a token", []string{"observe", "--kubeconfig", kc}, exitFailed, "pass --token or --token-file"},
		{"observe token file missing", []string{"observe", "--kubeconfig", kc, "--token-file", "/nonexistent"}, exitFailed, "read token: open /nonexistent"},
		{"stat no argument", []string{"stat"}, exitUsage, "accepts 1 arg(s), received 0"},
		{"stat bad resource", []string{"stat", "--kubeconfig", kc, "svc/web"}, exitUsage, `invalid resource "svc/web"`},
		{"stat bad window", []string{"stat", "--window", "0s", "deploy/x"}, exitUsage, "invalid --window 0s"},
		{"status bad output", []string{"status", "-o", "yaml"}, exitUsage, `invalid --output "yaml": want text or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, &stdout, &stderr)
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("weft %q = exit %d, stderr %q; want exit %d, stderr containing %q", tt.args, code, stderr.String(), tt.wantCode, tt.wantStderr)
			}
		})
	}
}
