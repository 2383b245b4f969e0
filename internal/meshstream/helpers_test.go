package meshstream_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/internal/meshstream"
)

// nodeHeader carries the test's stand-in credentials: the node a stream
// authenticates as.
const nodeHeader = "x-test-node"

// headerAuth is the test servers' Authenticate: the node is whatever the
// nodeHeader metadata says.
func headerAuth(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(nodeHeader); len(v) == 1 && v[0] != "" {
		return v[0], nil
	}
	return "", errors.New("no node credentials")
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testServer is a Server served on a loopback gRPC server.
type testServer struct {
	*meshstream.Server
	Addr string
	Reg  *prometheus.Registry
	stop func()
}

// Stop stops serving, ending every stream; it is also done at Cleanup.
func (s *testServer) Stop() { s.stop() }

// startServer serves a new Server on addr ("" for any loopback port).
func startServer(tb testing.TB, addr string, opts meshstream.ServerOptions) *testServer {
	tb.Helper()
	if opts.Authenticate == nil {
		opts.Authenticate = headerAuth
	}
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	srv, err := meshstream.NewServer(opts, testLogger(tb))
	if err != nil {
		tb.Fatalf("NewServer: %v", err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		gs.Serve(lis)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			gs.Stop()
			<-done
		})
	}
	tb.Cleanup(stop)
	return &testServer{Server: srv, Addr: lis.Addr().String(), Reg: reg, stop: stop}
}

// counter returns the value of the server's counter metric name.
func (s *testServer) counter(tb testing.TB, name string) float64 {
	tb.Helper()
	mfs, err := s.Reg.Gather()
	if err != nil {
		tb.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
			return sum
		}
	}
	tb.Fatalf("no metric %s", name)
	return 0
}

// testConn is a connection that authenticates as node ("" = without
// credentials) and counts what it receives.
type testConn struct {
	grpc.ClientConnInterface
	node      string
	streams   atomic.Int64
	responses atomic.Int64
	resources atomic.Int64
	removals  atomic.Int64
}

// grpcFastReconnect lets a test's connection find a restarted server
// quickly.
var grpcFastReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.6, MaxDelay: 50 * time.Millisecond},
	MinConnectTimeout: time.Second,
}

// dial returns a testConn to addr for node.
func dial(tb testing.TB, addr, node string) *testConn {
	tb.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpcFastReconnect))
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { cc.Close() })
	return &testConn{ClientConnInterface: cc, node: node}
}

func (c *testConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c.streams.Add(1)
	if c.node != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, nodeHeader, c.node)
	}
	s, err := c.ClientConnInterface.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &countingStream{ClientStream: s, c: c}, nil
}

type countingStream struct {
	grpc.ClientStream
	c *testConn
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if r, ok := m.(*meshv1.DeltaResponse); ok && err == nil {
		s.c.responses.Add(1)
		s.c.resources.Add(int64(len(r.GetResources())))
		s.c.removals.Add(int64(len(r.GetRemovedResources())))
	}
	return err
}

// recorder is an apply function that records every update it is given
// and refuses those fail says to.
type recorder struct {
	mu      sync.Mutex
	updates []meshstream.Update
	fail    func(meshstream.Update) error
	// discard keeps updates from being recorded (benchmarks).
	discard bool
}

func (r *recorder) apply(_ context.Context, u meshstream.Update) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(u); err != nil {
			return err
		}
	}
	if !r.discard {
		r.updates = append(r.updates, u)
	}
	return nil
}

// applied returns the updates applied so far.
func (r *recorder) applied() []meshstream.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.updates)
}

// testClient is a Client whose Run runs until Stop or Cleanup.
type testClient struct {
	*meshstream.Client
	Conn *testConn
	Rec  *recorder
	stop func()
}

// Stop ends Run and waits for it to return.
func (c *testClient) Stop() { c.stop() }

// newClient returns a Client of node over conn, applying through rec (a
// fresh recorder if nil), not running.
func newClient(tb testing.TB, conn *testConn, node string, rec *recorder) *testClient {
	tb.Helper()
	if rec == nil {
		rec = &recorder{}
	}
	cl, err := meshstream.NewClient(conn, node, rec.apply, meshstream.ClientOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, testLogger(tb))
	if err != nil {
		tb.Fatalf("NewClient: %v", err)
	}
	return &testClient{Client: cl, Conn: conn, Rec: rec, stop: func() {}}
}

// start runs c until Stop or Cleanup.
func (c *testClient) start(tb testing.TB) *testClient {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("Run() = %v, want nil", err)
			}
		})
	}
	tb.Cleanup(c.stop)
	return c
}

// startClient dials srv as node and runs a Client of node.
func startClient(tb testing.TB, srv *testServer, node string, rec *recorder) *testClient {
	tb.Helper()
	return newClient(tb, dial(tb, srv.Addr, node), node, rec).start(tb)
}

// waitFor polls cond until it holds, failing after a deadline.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitSystem waits until c holds systemVersion.
func waitSystem(tb testing.TB, c *testClient, systemVersion string) {
	tb.Helper()
	waitFor(tb, "client at system version "+systemVersion, func() bool { return c.Current().SystemVersion == systemVersion })
}

// setNode calls SetNode and fails on error.
func setNode(tb testing.TB, srv *testServer, node, systemVersion string, rs ...*meshv1.Resource) {
	tb.Helper()
	if err := srv.SetNode(node, rs, systemVersion); err != nil {
		tb.Fatalf("SetNode(%s, %s): %v", node, systemVersion, err)
	}
}

// workload returns a Workload resource of uid at version; ip varies its
// content.
func workload(uid, version, ip string) *meshv1.Resource {
	return &meshv1.Resource{Name: meshv1.WorkloadName(uid), Version: version, Body: &meshv1.Resource_Workload{Workload: &meshv1.Workload{
		Uid: uid, Namespace: "shop", Name: "pod-" + uid, ServiceAccount: "sa", Node: "node-a", Ips: []string{ip},
	}}}
}

func settings(version, trustDomain string) *meshv1.Resource {
	return &meshv1.Resource{Name: meshv1.SettingsName, Version: version, Body: &meshv1.Resource_Settings{Settings: &meshv1.MeshSettings{
		TrustDomain: trustDomain, PolicyMode: "strict",
	}}}
}

// versions maps each resource of rs to its version.
func versions(rs map[string]*meshv1.Resource) map[string]string {
	out := make(map[string]string, len(rs))
	for name, r := range rs {
		out[name] = r.GetVersion()
	}
	return out
}

// wantVersions fails unless c holds exactly want (name → version).
func wantVersions(tb testing.TB, c *testClient, want map[string]string) {
	tb.Helper()
	if got := versions(c.Current().Resources); !maps.Equal(got, want) {
		tb.Errorf("client holds %v, want %v", got, want)
	}
}

// sameResources reports how a and b differ, "" if they hold equal
// resources.
func sameResources(a, b map[string]*meshv1.Resource) string {
	for name, ra := range a {
		rb, ok := b[name]
		if !ok {
			return fmt.Sprintf("%s only in the first", name)
		}
		if !proto.Equal(ra, rb) {
			return fmt.Sprintf("%s: %v != %v", name, ra, rb)
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			return fmt.Sprintf("%s only in the second", name)
		}
	}
	return ""
}

// statusCode returns err's gRPC code.
func statusCode(err error) codes.Code { return status.Code(err) }
