package flows

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"github.com/weftmesh/weft/daemon/flows/internal/flowtest"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	flowsv1 "github.com/weftmesh/weft/api/flows/v1"
)

// serveUnix serves s's export and observer APIs on sockets in a temporary
// directory until the test ends, and returns the socket paths.
func serveUnix(t *testing.T, s *Server) (export, hubble string) {
	t.Helper()
	dir := t.TempDir()
	export, hubble = filepath.Join(dir, "flows-export.sock"), filepath.Join(dir, "hubble.sock")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	for path, serve := range map[string]func(context.Context, net.Listener) error{export: s.ServeExport, hubble: s.ServeObserver} {
		l, err := ListenUnix(path)
		if err != nil {
			t.Fatal(err)
		}
		go func() { errc <- serve(ctx, l) }()
	}
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-errc; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
		for _, p := range []string{export, hubble} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket %s still there after stop (%v)", p, err)
			}
		}
	})
	return export, hubble
}

func dialUnix(t *testing.T, path string) *grpc.ClientConn { return dialUnixTB(t, path) }

func dialUnixTB(t testing.TB, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestUnixSockets: a producer exports over the real socket and a Hubble
// client reads it back the way the hubble CLI does (health, ServerStatus,
// GetFlows with a field mask, follow).
func TestUnixSockets(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := New(Config{NodeName: "node-a", RingSize: 64, Version: "v9", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	exportPath, hubblePath := serveUnix(t, s)
	for _, p := range []string{exportPath, hubblePath} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
			t.Errorf("socket %s: %v, %v, want a socket with mode 0600", p, fi.Mode(), err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	hc := dialUnix(t, hubblePath)
	for _, svc := range []string{"", ObserverServiceName} {
		resp, err := healthpb.NewHealthClient(hc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v, want SERVING", svc, resp, err)
		}
	}
	obs := observerpb.NewObserverClient(hc)
	follow, err := obs.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return gaugeValue(s.metrics.followers) == 1 })

	stream, err := flowsv1.NewFlowExportClient(dialUnix(t, exportPath)).Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&flowsv1.ExportRequest{Producer: "ztunnel", Flows: []*flowpb.Flow{flowtest.L4Flow(), flowtest.HTTPFlow()}}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&flowsv1.ExportRequest{Producer: "ztunnel", Lost: 3, Flows: []*flowpb.Flow{flowtest.DroppedFlow()}}); err != nil {
		t.Fatal(err)
	}
	var followed []string
	for len(followed) < 4 {
		r, err := follow.Recv()
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
		followed = append(followed, describe(r))
	}
	if want := "[web-7d9 a lost:OBSERVER_EVENTS_QUEUE:3 web-7d9]"; fmtList(followed) != want {
		t.Errorf("followed %v, want %s", followed, want)
	}

	// hubble observe --last 2 --verdict DROPPED -o compact sends the
	// default field mask.
	last, err := obs.GetFlows(ctx, &observerpb.GetFlowsRequest{
		Number:    2,
		Whitelist: []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}},
		FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"time", "verdict", "source.pod_name", "node_name", "drop_reason_desc"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []*observerpb.GetFlowsResponse
	for {
		r, err := last.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	// The loss lies within the window read: it is reported, whatever the
	// filter.
	if len(got) != 2 || got[0].GetLostEvents().GetNumEventsLost() != 3 {
		t.Fatalf("last 2 dropped = %v, want the loss of 3 and the dropped flow", got)
	}
	if f := got[1].GetFlow(); f.GetVerdict() != flowpb.Verdict_DROPPED || f.GetDropReasonDesc() != flowpb.DropReason_POLICY_DENIED ||
		f.GetNodeName() != "node-a" || f.GetSource().GetPodName() != "web-7d9" || f.GetL4() != nil || f.GetEmitter() != nil || f.GetSource().GetNamespace() != "" {
		t.Errorf("last 2 dropped, masked = %v, want the dropped flow with only the masked fields", f)
	}

	st, err := obs.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil || st.GetNumFlows() != 3 || st.GetSeenFlows() != 3 || st.GetMaxFlows() != 64 || st.GetVersion() != "weft/v9" {
		t.Errorf("ServerStatus = %v, %v, want 3 flows of 64, weft/v9", st, err)
	}
	nodes, err := obs.GetNodes(ctx, &observerpb.GetNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetName() != "node-a" {
		t.Errorf("GetNodes = %v, %v, want node-a", nodes, err)
	}
	ae, err := obs.GetAgentEvents(ctx, &observerpb.GetAgentEventsRequest{})
	if err == nil {
		_, err = ae.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("GetAgentEvents = %v, want Unimplemented", err)
	}

	for name, c := range map[string]struct{ got, want float64 }{
		"weft_agent_flows_seen_total": {counterValue(s.metrics.seen), 3},
		"weft_agent_flows_exporters":  {gaugeValue(s.metrics.exporters), 1},
		"weft_agent_flows_followers":  {gaugeValue(s.metrics.followers), 1},
		"weft_agent_flows_ring_size":  {gaugeValue(s.metrics.ringSize), 64},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", name, c.got, c.want)
		}
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 5 {
		t.Errorf("registry holds %d metric families (%v), want the 5 of the flow server", len(mfs), err)
	}
	if got := counterValue(s.metrics.lost.WithLabelValues("observer_events_queue")); got != 3 {
		t.Errorf("weft_agent_flows_lost_total{reason=observer_events_queue} = %v, want 3", got)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Errorf("close export stream: %v", err)
	}
}

// TestStopEndsFollowers: stopping the observer ends following streams
// cleanly and promptly.
func TestStopEndsFollowers(t *testing.T) {
	s := newTestServer(t, 8)
	path := filepath.Join(t.TempDir(), "hubble.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.ServeObserver(ctx, l) }()
	follow, err := observerpb.NewObserverClient(dialUnix(t, path)).GetFlows(context.Background(), &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return gaugeValue(s.metrics.followers) == 1 })
	start := time.Now()
	stop()
	if _, err := follow.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("follower after stop: %v, want EOF", err)
	}
	if err := <-errc; err != nil {
		t.Errorf("ServeObserver = %v, want nil", err)
	}
	if d := time.Since(start); d > stopGrace {
		t.Errorf("stop took %v, want less than the %v grace", d, stopGrace)
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "hubble.sock")
	l1, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	// A crashed agent leaves its socket; the next one takes over.
	l1.(*unixListener).UnixListener.Close()
	l2, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	defer l2.Close()
	if err := os.WriteFile(path+"x", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path + "x"); err == nil {
		t.Errorf("ListenUnix over a regular file succeeded, want an error")
	}
}

type fakeAuthorizer map[string]error

func (f fakeAuthorizer) Authorize(_ context.Context, token string) error {
	if err, ok := f[token]; ok {
		return err
	}
	return ErrUnauthenticated
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// TestTLSAuthorization: over TLS, with the self-signed certificate pinned,
// only authorised callers read flows; health needs no token.
func TestTLSAuthorization(t *testing.T) {
	s := newTestServer(t, 8)
	s.Add(flowtest.L4Flow())
	cert, certPEM, err := SelfSignedCert("node-a", []net.IP{net.ParseIP("127.0.0.1")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	authz := fakeAuthorizer{"good": nil, "other-node": errors.Join(ErrPermissionDenied), "broken": errors.New("api server down")}
	go func() {
		errc <- s.ServeObserverTLS(ctx, l, &tls.Config{Certificates: []tls.Certificate{cert}}, authz)
	}()
	defer func() {
		stop()
		if err := <-errc; err != nil {
			t.Errorf("ServeObserverTLS = %v", err)
		}
	}()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("cannot parse the published certificate")
	}
	dial := func(serverName string, opts ...grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient(l.Addr().String(), append(opts,
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: serverName})))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		token string
		want  codes.Code
	}{
		{"", codes.Unauthenticated},
		{"bad", codes.Unauthenticated},
		{"other-node", codes.PermissionDenied},
		{"broken", codes.Unavailable},
		{"good", codes.OK},
	}
	for _, tt := range tests {
		t.Run("token "+tt.token, func(t *testing.T) {
			var opts []grpc.DialOption
			if tt.token != "" {
				opts = append(opts, grpc.WithPerRPCCredentials(bearer(tt.token)))
			}
			obs := observerpb.NewObserverClient(dial("node-a", opts...))
			_, err := obs.ServerStatus(cctx, &observerpb.ServerStatusRequest{})
			if status.Code(err) != tt.want {
				t.Errorf("ServerStatus = %v, want %v", err, tt.want)
			}
			fl, err := obs.GetFlows(cctx, &observerpb.GetFlowsRequest{})
			if err == nil {
				_, err = fl.Recv()
			}
			if status.Code(err) != tt.want {
				t.Errorf("GetFlows = %v, want %v", err, tt.want)
			}
		})
	}
	hr, err := healthpb.NewHealthClient(dial("node-a")).Check(cctx, &healthpb.HealthCheckRequest{Service: ObserverServiceName})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without token = %v, %v, want SERVING", hr, err)
	}
	nodes, err := observerpb.NewObserverClient(dial("node-a", grpc.WithPerRPCCredentials(bearer("good")))).GetNodes(cctx, &observerpb.GetNodesRequest{})
	if tls := nodes.GetNodes()[0].GetTls(); err != nil || !tls.GetEnabled() || tls.GetServerName() != "node-a" {
		t.Errorf("GetNodes over tls = %v, %v, want tls enabled, server name node-a", nodes, err)
	}
	// The certificate names the node: another server name fails.
	_, err = healthpb.NewHealthClient(dial("node-b")).Check(cctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("health with server name node-b = %v, want a certificate error (Unavailable)", err)
	}
}

// TestOverloadExactOverGRPC: a producer exports as fast as it can (and
// reports losses of its own) while a follower over the real socket does
// not read; once it reads, what it gets and what it is told was lost add
// up to what was produced, exactly.
func TestOverloadExactOverGRPC(t *testing.T) {
	s := newTestServer(t, 256)
	exportPath, hubblePath := serveUnix(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	follow, err := observerpb.NewObserverClient(dialUnix(t, hubblePath)).GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return gaugeValue(s.metrics.followers) == 1 })

	stream, err := flowsv1.NewFlowExportClient(dialUnix(t, exportPath)).Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const batches, perBatch, lostPerBatch = 500, 50, 2
	start := time.Now()
	for i := range batches {
		req := &flowsv1.ExportRequest{Producer: "ztunnel", Lost: lostPerBatch}
		for range perBatch {
			req.Flows = append(req.Flows, flowtest.L4Flow())
		}
		if i == 0 {
			req.Lost = 0
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	produced := uint64(batches*perBatch + (batches-1)*lostPerBatch)
	var flows, ringLost, producerLost uint64
	for flows+ringLost+producerLost < produced {
		r, err := follow.Recv()
		if err != nil {
			t.Fatalf("follow after %d flows, %d + %d lost of %d: %v", flows, ringLost, producerLost, produced, err)
		}
		switch le := r.GetLostEvents(); {
		case le == nil:
			flows++
		case le.GetSource() == flowpb.LostEventSource_HUBBLE_RING_BUFFER:
			ringLost += le.GetNumEventsLost()
		default:
			producerLost += le.GetNumEventsLost()
		}
	}
	if got := flows + ringLost + producerLost; got != produced || ringLost == 0 {
		t.Errorf("delivered %d + ring lost %d + producer lost %d = %d, want produced %d with ring losses",
			flows, ringLost, producerLost, got, produced)
	}
	t.Logf("%d records exported in %v (%.0f/s); follower got %d flows, told of %d lost in the ring and %d lost by the producer",
		batches*perBatch, elapsed.Round(time.Millisecond), float64(batches*perBatch)/elapsed.Seconds(), flows, ringLost, producerLost)
}
