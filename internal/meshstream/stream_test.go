package meshstream_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/internal/meshstream"
)

// TestIncremental: each change of a node's set reaches its client, and
// only what changed travels.
func TestIncremental(t *testing.T) {
	srv := startServer(t, "", meshstream.ServerOptions{})
	cl := startClient(t, srv, "node-a", nil)

	steps := []struct {
		name          string
		set           []*meshv1.Resource
		wantChanged   []string
		wantRemoved   []string
		wantResources int64 // resources received so far
	}{
		{
			name:          "initial set",
			set:           []*meshv1.Resource{settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "1", "10.0.0.2"), workload("c", "1", "10.0.0.3")},
			wantChanged:   []string{"settings", "workloads/a", "workloads/b", "workloads/c"},
			wantResources: 4,
		},
		{
			name:          "add one",
			set:           []*meshv1.Resource{settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "1", "10.0.0.2"), workload("c", "1", "10.0.0.3"), workload("d", "1", "10.0.0.4")},
			wantChanged:   []string{"workloads/d"},
			wantResources: 5,
		},
		{
			name:          "change one",
			set:           []*meshv1.Resource{settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "2", "10.0.1.2"), workload("c", "1", "10.0.0.3"), workload("d", "1", "10.0.0.4")},
			wantChanged:   []string{"workloads/b"},
			wantResources: 6,
		},
		{
			name:          "remove one",
			set:           []*meshv1.Resource{settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "2", "10.0.1.2"), workload("d", "1", "10.0.0.4")},
			wantRemoved:   []string{"workloads/c"},
			wantResources: 6,
		},
		{
			name:          "add, change and remove at once",
			set:           []*meshv1.Resource{settings("2", "example.org"), workload("a", "1", "10.0.0.1"), workload("e", "1", "10.0.0.5")},
			wantChanged:   []string{"settings", "workloads/e"},
			wantRemoved:   []string{"workloads/b", "workloads/d"},
			wantResources: 8,
		},
	}
	for i, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			sys := fmt.Sprint("v", i)
			setNode(t, srv, "node-a", sys, step.set...)
			waitSystem(t, cl, sys)

			ups := cl.Rec.applied()
			last := ups[len(ups)-1]
			var changed []string
			for _, r := range last.Changed {
				changed = append(changed, r.GetName())
			}
			if !slices.Equal(changed, step.wantChanged) {
				t.Errorf("update changed %v, want %v", changed, step.wantChanged)
			}
			if !slices.Equal(last.Removed, step.wantRemoved) {
				t.Errorf("update removed %v, want %v", last.Removed, step.wantRemoved)
			}
			want := make(map[string]*meshv1.Resource)
			for _, r := range step.set {
				want[r.GetName()] = r
			}
			if d := sameResources(cl.Current().Resources, want); d != "" {
				t.Errorf("client holds other resources than the node's set: %s", d)
			}
			if d := sameResources(last.Resources, want); d != "" {
				t.Errorf("Update.Resources is not the whole set: %s", d)
			}
			if got := cl.Conn.resources.Load(); got != step.wantResources {
				t.Errorf("resources received in total = %d, want %d", got, step.wantResources)
			}
			waitFor(t, "server sees the ACK", func() bool { v, ok := srv.Acked("node-a"); return ok && v == sys })
		})
	}

	t.Run("same set again sends nothing", func(t *testing.T) {
		before := cl.Conn.responses.Load()
		last := steps[len(steps)-1]
		setNode(t, srv, "node-a", fmt.Sprint("v", len(steps)-1), last.set...)
		// A later change must arrive as the very next response.
		setNode(t, srv, "node-a", "final", append(slices.Clone(last.set), workload("f", "1", "10.0.0.6"))...)
		waitSystem(t, cl, "final")
		if got := cl.Conn.responses.Load() - before; got != 1 {
			t.Errorf("responses for a repeated set and one change = %d, want 1", got)
		}
	})
	if got := srv.counter(t, "weft_meshstream_acks_total"); got != float64(len(steps)+1) {
		t.Errorf("weft_meshstream_acks_total = %v, want %d", got, len(steps)+1)
	}
}

// TestNack: a refused update leaves the client as it was, the server sees
// the NACK, does not resend it, and sends the next change.
func TestNack(t *testing.T) {
	var mu sync.Mutex
	var nacks []string
	srv := startServer(t, "", meshstream.ServerOptions{OnNack: func(node, sys, detail string, _ time.Time) {
		mu.Lock()
		defer mu.Unlock()
		nacks = append(nacks, node+" "+sys+": "+detail)
	}})
	rec := &recorder{fail: func(u meshstream.Update) error {
		if _, bad := u.Resources[meshv1.WorkloadName("bad")]; bad {
			return errors.New("workload bad: unparsable address")
		}
		return nil
	}}
	cl := startClient(t, srv, "node-a", rec)

	setNode(t, srv, "node-a", "v1", workload("a", "1", "10.0.0.1"))
	waitSystem(t, cl, "v1")
	held := cl.Current()

	setNode(t, srv, "node-a", "v2", workload("a", "2", "10.0.0.9"), workload("bad", "1", "not-an-ip"))
	waitFor(t, "the NACK", func() bool { mu.Lock(); defer mu.Unlock(); return len(nacks) == 1 })
	mu.Lock()
	if want := "node-a v2: apply config v2: workload bad: unparsable address"; nacks[0] != want {
		t.Errorf("OnNack got %q, want %q", nacks[0], want)
	}
	mu.Unlock()
	if got := cl.Current(); got.SystemVersion != "v1" || sameResources(got.Resources, held.Resources) != "" {
		t.Errorf("after a NACK the client holds %s %v, want v1 %v", got.SystemVersion, versions(got.Resources), versions(held.Resources))
	}
	ns, _ := srv.Node("node-a")
	if len(ns.Streams) != 1 || !strings.Contains(ns.Streams[0].LastNack, "unparsable address") || ns.Streams[0].AckedSystemVersion != "v1" {
		t.Errorf("Node(node-a) = %+v, want one stream with the NACK, acked at v1", ns)
	}
	if v, ok := srv.Acked("node-a"); !ok || v != "v1" {
		t.Errorf("Acked(node-a) = %q, %v, want v1, true", v, ok)
	}

	// The next change is computed against the acknowledged state: a's new
	// version travels again, bad's removal needs none (never held).
	before := cl.Conn.responses.Load()
	setNode(t, srv, "node-a", "v3", workload("a", "2", "10.0.0.9"), workload("c", "1", "10.0.0.3"))
	waitSystem(t, cl, "v3")
	if got := cl.Conn.responses.Load() - before; got != 1 {
		t.Errorf("responses after the NACK = %d, want 1 (no resend of the refused one)", got)
	}
	wantVersions(t, cl, map[string]string{"workloads/a": "2", "workloads/c": "1"})
	if got := srv.counter(t, "weft_meshstream_nacks_total"); got != 1 {
		t.Errorf("weft_meshstream_nacks_total = %v, want 1", got)
	}
}

// TestResume: a client that reconnects to the same server states what it
// holds and gets only what changed meanwhile.
func TestResume(t *testing.T) {
	srv := startServer(t, "", meshstream.ServerOptions{})
	conn := dial(t, srv.Addr, "node-a")
	cl := newClient(t, conn, "node-a", nil).start(t)
	setNode(t, srv, "node-a", "v1", settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "1", "10.0.0.2"), workload("c", "1", "10.0.0.3"))
	waitSystem(t, cl, "v1")
	cl.Stop()
	waitFor(t, "the stream to end", func() bool { return len(srv.ConnectedNodes()) == 0 })

	setNode(t, srv, "node-a", "v2", settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "2", "10.0.1.2"), workload("d", "1", "10.0.0.4"))
	before := conn.resources.Load()
	cl.start(t)
	waitSystem(t, cl, "v2")

	if got := conn.resources.Load() - before; got != 2 {
		t.Errorf("resources sent on resume = %d, want 2 (b and d)", got)
	}
	ups := cl.Rec.applied()
	if last := ups[len(ups)-1]; last.Resync || !slices.Equal(last.Removed, []string{"workloads/c"}) {
		t.Errorf("resume update: Resync %v, Removed %v; want false, [workloads/c]", last.Resync, last.Removed)
	}
	wantVersions(t, cl, map[string]string{"settings": "1", "workloads/a": "1", "workloads/b": "2", "workloads/d": "1"})
	if ns, _ := srv.Node("node-a"); len(ns.Streams) != 1 || !ns.Streams[0].Resumed {
		t.Errorf("Node(node-a).Streams = %+v, want one resumed stream", ns.Streams)
	}
}

// TestServerRestart: the client keeps serving its set while the server is
// down, and after a restart ends up exactly where a fresh client does, even
// when the new server reuses version strings for other content.
func TestServerRestart(t *testing.T) {
	old := startServer(t, "", meshstream.ServerOptions{})
	addr := old.Addr
	cl := startClient(t, old, "node-a", nil)
	setNode(t, old, "node-a", "1", settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "1", "10.0.0.2"))
	waitSystem(t, cl, "1")
	held := cl.Current()

	old.Stop()
	attempts := cl.Conn.streams.Load()
	waitFor(t, "the client to retry while the server is down", func() bool { return cl.Conn.streams.Load() >= attempts+3 })
	if got := cl.Current(); got.SystemVersion != held.SystemVersion || sameResources(got.Resources, held.Resources) != "" {
		t.Errorf("while the server is down the client holds %s %v, want %s %v", got.SystemVersion, versions(got.Resources), held.SystemVersion, versions(held.Resources))
	}
	if n := len(cl.Rec.applied()); n != 1 {
		t.Errorf("updates applied = %d, want 1 (none while the server is down)", n)
	}

	// The new instance's first set reuses version "1" of a for other
	// content and lacks b.
	restarted := startServer(t, addr, meshstream.ServerOptions{})
	newSet := []*meshv1.Resource{settings("1", "example.org"), workload("a", "1", "10.9.9.9"), workload("c", "1", "10.0.0.3")}
	setNode(t, restarted, "node-a", "1", newSet...)
	waitFor(t, "the client to resync", func() bool { return cl.Current().ServerInstance == restarted.Instance() })

	fresh := startClient(t, restarted, "node-a", nil)
	waitFor(t, "a fresh client", func() bool { return fresh.Current().SystemVersion == "1" })
	if d := sameResources(cl.Current().Resources, fresh.Current().Resources); d != "" {
		t.Errorf("after the restart the client differs from a fresh one: %s", d)
	}
	ups := cl.Rec.applied()
	if last := ups[len(ups)-1]; !last.Resync || !slices.Equal(last.Removed, []string{"workloads/b"}) {
		t.Errorf("resync update: Resync %v, Removed %v; want true, [workloads/b]", last.Resync, last.Removed)
	}
	if ns, _ := restarted.Node("node-a"); len(ns.Streams) != 2 || ns.Streams[0].Resumed {
		t.Errorf("restarted server's streams = %+v, want two, none resumed", ns.Streams)
	}
}

// TestNoSetNoPush: a server that does not know a node's set yet (it just
// started) sends nothing, so the node keeps what it holds.
func TestNoSetNoPush(t *testing.T) {
	old := startServer(t, "", meshstream.ServerOptions{})
	cl := startClient(t, old, "node-a", nil)
	setNode(t, old, "node-a", "1", workload("a", "1", "10.0.0.1"))
	waitSystem(t, cl, "1")
	old.Stop()
	restarted := startServer(t, old.Addr, meshstream.ServerOptions{})
	setNode(t, restarted, "node-b", "9", workload("z", "1", "10.0.0.26"))
	waitFor(t, "the client to reconnect", func() bool { return slices.Equal(restarted.ConnectedNodes(), []string{"node-a"}) })
	// Let another node's change flow, so that a wrong push would show.
	other := startClient(t, restarted, "node-b", nil)
	waitSystem(t, other, "9")
	if cl.Conn.responses.Load() != 1 {
		t.Errorf("responses = %d, want 1: the node was sent something before its set was known", cl.Conn.responses.Load())
	}
	wantVersions(t, cl, map[string]string{"workloads/a": "1"})
	if _, ok := restarted.Acked("node-a"); ok {
		t.Errorf("Acked(node-a) ok before the node's set is known")
	}
}

// TestAuthentication: the node comes from the credentials; a hello naming
// another node, or no credentials, is refused, and protocol violations end
// the stream.
func TestAuthentication(t *testing.T) {
	srv := startServer(t, "", meshstream.ServerOptions{})
	setNode(t, srv, "node-a", "a1", workload("a", "1", "10.0.0.1"))
	setNode(t, srv, "node-b", "b1", workload("b", "1", "10.0.0.2"))

	tests := []struct {
		name  string
		creds string
		hello *meshv1.DeltaRequest
		then  func(resp *meshv1.DeltaResponse) *meshv1.DeltaRequest // second request, if any
		want  codes.Code
	}{
		{name: "own node", creds: "node-a", hello: &meshv1.DeltaRequest{Node: "node-a"}, want: codes.OK},
		{name: "another node", creds: "node-a", hello: &meshv1.DeltaRequest{Node: "node-b"}, want: codes.PermissionDenied},
		{name: "no node in hello", creds: "node-a", hello: &meshv1.DeltaRequest{}, want: codes.PermissionDenied},
		{name: "no credentials", hello: &meshv1.DeltaRequest{Node: "node-a"}, want: codes.Unauthenticated},
		{name: "hello answers a response", creds: "node-a", hello: &meshv1.DeltaRequest{Node: "node-a", ResponseNonce: "1"}, want: codes.InvalidArgument},
		{
			name: "wrong nonce", creds: "node-a", hello: &meshv1.DeltaRequest{Node: "node-a"},
			then: func(*meshv1.DeltaResponse) *meshv1.DeltaRequest { return &meshv1.DeltaRequest{ResponseNonce: "nope"} },
			want: codes.InvalidArgument,
		},
		{
			name: "second hello", creds: "node-a", hello: &meshv1.DeltaRequest{Node: "node-a"},
			then: func(r *meshv1.DeltaResponse) *meshv1.DeltaRequest {
				return &meshv1.DeltaRequest{ResponseNonce: r.GetNonce(), Node: "node-b"}
			},
			want: codes.InvalidArgument,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn := dial(t, srv.Addr, tt.creds)
			stream, err := meshv1.NewMeshConfigClient(conn).DeltaStream(ctx)
			if err != nil {
				t.Fatalf("DeltaStream: %v", err)
			}
			if err := stream.Send(tt.hello); err != nil {
				t.Fatalf("send hello: %v", err)
			}
			resp, err := stream.Recv()
			if err == nil && tt.then != nil {
				if err = stream.Send(tt.then(resp)); err == nil {
					_, err = stream.Recv()
				}
			}
			if got := statusCode(err); got != tt.want {
				t.Fatalf("stream status = %v (%v), want %v", got, err, tt.want)
			}
			if tt.want == codes.OK && resp.GetSystemVersionInfo() != "a1" {
				t.Errorf("first response is at %q, want node-a's a1", resp.GetSystemVersionInfo())
			}
		})
	}

	t.Run("client of another node gets nothing", func(t *testing.T) {
		conn := dial(t, srv.Addr, "node-a")
		cl := newClient(t, conn, "node-b", nil).start(t)
		waitFor(t, "retries", func() bool { return conn.streams.Load() >= 3 })
		if got := cl.Current(); got.Resources != nil || conn.responses.Load() != 0 {
			t.Errorf("client naming node-b with node-a's credentials holds %v after %d responses, want nothing", versions(got.Resources), conn.responses.Load())
		}
	})
	if got := srv.counter(t, "weft_meshstream_refused_streams_total"); got < 6 {
		t.Errorf("weft_meshstream_refused_streams_total = %v, want at least 6", got)
	}
}

// TestManyClients: 100 nodes on one server each hold exactly their own
// set, through a change of every set.
func TestManyClients(t *testing.T) {
	const nodes = 100
	srv := startServer(t, "", meshstream.ServerOptions{})
	sets := make(map[string][]*meshv1.Resource)
	clients := make(map[string]*testClient)
	for i := range nodes {
		node := fmt.Sprintf("node-%03d", i)
		for j := range 10 {
			sets[node] = append(sets[node], workload(fmt.Sprintf("%s-%d", node, j), "1", fmt.Sprintf("10.%d.0.%d", i, j+1)))
		}
		sets[node] = append(sets[node], settings("1", "cluster.local"))
		clients[node] = startClient(t, srv, node, nil)
	}
	for round := range 2 {
		for node, set := range sets {
			set[round] = workload(fmt.Sprintf("%s-changed-%d", node, round), "1", "10.255.0.1")
			setNode(t, srv, node, fmt.Sprint(node, "/", round), set...)
		}
		for node, cl := range clients {
			waitSystem(t, cl, fmt.Sprint(node, "/", round))
			want := make(map[string]*meshv1.Resource)
			for _, r := range sets[node] {
				want[r.GetName()] = r
			}
			if d := sameResources(cl.Current().Resources, want); d != "" {
				t.Errorf("round %d: %s holds another set than its own: %s", round, node, d)
			}
		}
	}
	if got := srv.ConnectedNodes(); len(got) != nodes {
		t.Errorf("ConnectedNodes() has %d nodes, want %d", len(got), nodes)
	}
}

// TestRunReturnsWithoutLeaks: after Run returns, neither the client nor the
// server keeps a goroutine of the stream.
func TestRunReturnsWithoutLeaks(t *testing.T) {
	srv := startServer(t, "", meshstream.ServerOptions{})
	conn := dial(t, srv.Addr, "node-a")
	setNode(t, srv, "node-a", "v1", workload("a", "1", "10.0.0.1"))
	// Warm the connection up so its own goroutines count in the baseline.
	warm := newClient(t, conn, "node-a", nil).start(t)
	waitSystem(t, warm, "v1")
	warm.Stop()
	waitFor(t, "the warm-up stream to end", func() bool { return len(srv.ConnectedNodes()) == 0 })
	baseline := runtime.NumGoroutine()

	for range 5 {
		cl := newClient(t, conn, "node-a", nil).start(t)
		waitSystem(t, cl, "v1")
		cl.Stop()
	}
	waitFor(t, "streams to end", func() bool { return len(srv.ConnectedNodes()) == 0 })
	waitFor(t, "goroutines back at the baseline", func() bool { return runtime.NumGoroutine() <= baseline })

	// Stopped while waiting to reconnect to a server that is down.
	cl := newClient(t, conn, "node-a", nil).start(t)
	waitSystem(t, cl, "v1")
	srv.Stop()
	attempts := conn.streams.Load()
	waitFor(t, "retries", func() bool { return conn.streams.Load() >= attempts+2 })
	cl.Stop()
	waitFor(t, "goroutines back at the baseline", func() bool { return runtime.NumGoroutine() <= baseline })
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if strings.Contains(stacks, "meshstream.(*Client)") || strings.Contains(stacks, "meshstream.(*Server)") {
		t.Errorf("meshstream goroutines left after Run returned:\n%s", stacks)
	}
}

// TestClientRefusesMalformed: a response that breaks the protocol's rules
// is NACKed without reaching apply, and the held set stays.
func TestClientRefusesMalformed(t *testing.T) {
	wl := workload("a", "1", "10.0.0.1")
	tests := []struct {
		name string
		resp *meshv1.DeltaResponse
		want string
	}{
		{"no version", &meshv1.DeltaResponse{Resources: []*meshv1.Resource{{Name: "workloads/x", Body: wl.Body}}}, "without a version"},
		{"no body", &meshv1.DeltaResponse{Resources: []*meshv1.Resource{{Name: "workloads/x", Version: "1"}}}, "does not match"},
		{"kind not matching name", &meshv1.DeltaResponse{Resources: []*meshv1.Resource{{Name: "services/shop/x", Version: "1", Body: wl.Body}}}, "does not match"},
		{"sent twice", &meshv1.DeltaResponse{Resources: []*meshv1.Resource{wl, wl}}, "sent twice"},
		{"changed and removed", &meshv1.DeltaResponse{Resources: []*meshv1.Resource{wl}, RemovedResources: []string{wl.GetName()}}, "both changed and removed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := startFakeServer(t)
			rec := &recorder{}
			cl := newClient(t, dial(t, fs.addr, "node-a"), "node-a", rec).start(t)
			fs.send(t, &meshv1.DeltaResponse{SystemVersionInfo: "good", Nonce: "1", Resources: []*meshv1.Resource{settings("1", "cluster.local")}})
			if got := fs.answer(t); got.GetResponseNonce() != "1" || got.GetErrorDetail() != "" {
				t.Fatalf("answer to a good response = %v, want ACK of nonce 1", got)
			}
			tt.resp.Nonce, tt.resp.SystemVersionInfo = "2", "bad"
			fs.send(t, tt.resp)
			got := fs.answer(t)
			if got.GetResponseNonce() != "2" || !strings.Contains(got.GetErrorDetail(), tt.want) {
				t.Errorf("answer = %v, want a NACK of nonce 2 containing %q", got, tt.want)
			}
			if n := len(rec.applied()); n != 1 {
				t.Errorf("apply called %d times, want 1 (the good response only)", n)
			}
			wantVersions(t, cl, map[string]string{"settings": "1"})
		})
	}
}

// fakeServer is a MeshConfig server a test drives by hand, for responses a
// real Server never sends.
type fakeServer struct {
	meshv1.UnimplementedMeshConfigServer
	addr    string
	out     chan *meshv1.DeltaResponse
	answers chan *meshv1.DeltaRequest
}

func startFakeServer(tb testing.TB) *fakeServer {
	tb.Helper()
	fs := &fakeServer{out: make(chan *meshv1.DeltaResponse), answers: make(chan *meshv1.DeltaRequest, 16)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	meshv1.RegisterMeshConfigServer(gs, fs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		gs.Serve(lis)
	}()
	tb.Cleanup(func() { gs.Stop(); <-done })
	fs.addr = lis.Addr().String()
	return fs
}

func (fs *fakeServer) DeltaStream(ss meshv1.MeshConfig_DeltaStreamServer) error {
	if _, err := ss.Recv(); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := ss.Recv()
			if err != nil {
				errc <- err
				return
			}
			fs.answers <- req
		}
	}()
	for {
		select {
		case r := <-fs.out:
			if err := ss.Send(r); err != nil {
				return err
			}
		case err := <-errc:
			return err
		}
	}
}

func (fs *fakeServer) send(tb testing.TB, r *meshv1.DeltaResponse) {
	tb.Helper()
	select {
	case fs.out <- r:
	case <-time.After(10 * time.Second):
		tb.Fatalf("no stream took response %s", r.GetNonce())
	}
}

func (fs *fakeServer) answer(tb testing.TB) *meshv1.DeltaRequest {
	tb.Helper()
	select {
	case a := <-fs.answers:
		return a
	case <-time.After(10 * time.Second):
		tb.Fatalf("no answer from the client")
		return nil
	}
}

// TestSetNodeValidates: SetNode refuses a set that every client would NACK.
func TestSetNodeValidates(t *testing.T) {
	srv := startServer(t, "", meshstream.ServerOptions{})
	wl := workload("a", "1", "10.0.0.1")
	tests := []struct {
		name    string
		set     []*meshv1.Resource
		wantErr bool
	}{
		{"valid", []*meshv1.Resource{wl, settings("1", "cluster.local")}, false},
		{"empty", nil, false},
		{"duplicate", []*meshv1.Resource{wl, wl}, true},
		{"no version", []*meshv1.Resource{{Name: wl.GetName(), Body: wl.Body}}, true},
		{"wrong prefix", []*meshv1.Resource{{Name: "policies/a", Version: "1", Body: wl.Body}}, true},
		{"nil", []*meshv1.Resource{nil}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := srv.SetNode("node-a", tt.set, "v")
			if (err != nil) != tt.wantErr {
				t.Errorf("SetNode(%s) = %v, want error %v", tt.name, err, tt.wantErr)
			}
		})
	}
}

// TestCoalesce: changes made while a response is unacknowledged reach the
// client as one response holding their net effect, whether the server
// still remembers each change or has to diff the whole set.
func TestCoalesce(t *testing.T) {
	tests := []struct {
		name    string
		changes int
	}{
		{"few changes", 10},
		{"more changes than the server remembers", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, "", meshstream.ServerOptions{})
			gate := make(chan struct{})
			rec := &recorder{fail: func(u meshstream.Update) error {
				if u.SystemVersion == "held" {
					<-gate
				}
				return nil
			}}
			cl := startClient(t, srv, "node-a", rec)
			set := map[string]*meshv1.Resource{}
			apply := func(sys string) {
				t.Helper()
				rs := slices.Collect(maps.Values(set))
				setNode(t, srv, "node-a", sys, rs...)
			}
			for i := range 20 {
				r := workload(fmt.Sprint(i), "0", "10.0.0.1")
				set[r.GetName()] = r
			}
			apply("v0")
			waitSystem(t, cl, "v0")
			apply("held")
			waitFor(t, "the held response to be in apply", func() bool {
				ns, _ := srv.Node("node-a")
				return len(ns.Streams) == 1 && ns.Streams[0].Pending
			})
			for i := range tt.changes {
				switch k := fmt.Sprint(i % 30); i % 3 {
				case 0: // change or add
					r := workload(k, fmt.Sprint("c", i), fmt.Sprintf("10.0.1.%d", i%250))
					set[r.GetName()] = r
				case 1: // remove
					delete(set, meshv1.WorkloadName(k))
				case 2: // add
					r := workload("new-"+k, fmt.Sprint("n", i), "10.0.2.1")
					set[r.GetName()] = r
				}
				apply(fmt.Sprint("c", i))
			}
			before := cl.Conn.responses.Load()
			close(gate)
			final := fmt.Sprint("c", tt.changes-1)
			waitSystem(t, cl, final)
			if got := cl.Conn.responses.Load() - before; got != 1 {
				t.Errorf("responses after the held one = %d, want 1", got)
			}
			if d := sameResources(cl.Current().Resources, set); d != "" {
				t.Errorf("client differs from the node's set: %s", d)
			}
		})
	}
}

// TestPatchNode: a patch reaches the client like the SetNode of the
// resulting set would, sending only what it changed.
func TestPatchNode(t *testing.T) {
	srv := startServer(t, "", meshstream.ServerOptions{})
	if err := srv.PatchNode("node-a", []*meshv1.Resource{workload("a", "1", "10.0.0.1")}, nil, "p0"); err == nil {
		t.Errorf("PatchNode of a node without a set = nil, want an error")
	}
	cl := startClient(t, srv, "node-a", nil)
	setNode(t, srv, "node-a", "v0", settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "1", "10.0.0.2"))
	waitSystem(t, cl, "v0")

	steps := []struct {
		name          string
		upsert        []*meshv1.Resource
		remove        []string
		want          map[string]string
		wantResources int64 // sent by this step
		wantErr       bool
	}{
		{
			name:          "upsert and remove",
			upsert:        []*meshv1.Resource{workload("a", "2", "10.0.1.1"), workload("c", "1", "10.0.0.3")},
			remove:        []string{meshv1.WorkloadName("b"), meshv1.WorkloadName("never-held")},
			want:          map[string]string{"settings": "1", "workloads/a": "2", "workloads/c": "1"},
			wantResources: 2,
		},
		{
			name:          "unchanged versions, new system version",
			upsert:        []*meshv1.Resource{workload("a", "2", "10.0.1.1")},
			want:          map[string]string{"settings": "1", "workloads/a": "2", "workloads/c": "1"},
			wantResources: 0,
		},
		{
			name:    "name both upserted and removed",
			upsert:  []*meshv1.Resource{workload("d", "1", "10.0.0.4")},
			remove:  []string{meshv1.WorkloadName("d")},
			want:    map[string]string{"settings": "1", "workloads/a": "2", "workloads/c": "1"},
			wantErr: true,
		},
	}
	for i, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			sys := fmt.Sprint("p", i)
			before := cl.Conn.resources.Load()
			err := srv.PatchNode("node-a", step.upsert, step.remove, sys)
			if (err != nil) != step.wantErr {
				t.Fatalf("PatchNode = %v, want error %v", err, step.wantErr)
			}
			if err == nil {
				waitSystem(t, cl, sys)
			}
			wantVersions(t, cl, step.want)
			if got := cl.Conn.resources.Load() - before; got != step.wantResources {
				t.Errorf("resources sent = %d, want %d", got, step.wantResources)
			}
		})
	}
	fresh := startClient(t, srv, "node-a", nil)
	waitSystem(t, fresh, "p1")
	if d := sameResources(cl.Current().Resources, fresh.Current().Resources); d != "" {
		t.Errorf("patched client differs from a fresh one: %s", d)
	}
}

// TestSetNodes hands one set to several nodes: each node gets only what
// changed for it (also a node that joined late, whose diff is its own), and
// patching one node's shared set leaves the others' alone.
func TestSetNodes(t *testing.T) {
	srv := startServer(t, "", meshstream.ServerOptions{})
	a := startClient(t, srv, "node-a", nil)
	b := startClient(t, srv, "node-b", nil)
	set1 := []*meshv1.Resource{settings("1", "cluster.local"), workload("a", "1", "10.0.0.1"), workload("b", "1", "10.0.0.2")}
	if err := srv.SetNodes([]string{"node-a", "node-b"}, set1, "v1"); err != nil {
		t.Fatalf("SetNodes v1: %v", err)
	}
	waitSystem(t, a, "v1")
	waitSystem(t, b, "v1")

	// node-c joins between two shared sets: its diff is against nothing.
	c := startClient(t, srv, "node-c", nil)
	before := a.Conn.resources.Load()
	set2 := []*meshv1.Resource{settings("1", "cluster.local"), workload("a", "2", "10.0.1.1"), workload("c", "1", "10.0.0.3")}
	if err := srv.SetNodes([]string{"node-a", "node-b", "node-c"}, set2, "v2"); err != nil {
		t.Fatalf("SetNodes v2: %v", err)
	}
	want := map[string]string{"settings": "1", "workloads/a": "2", "workloads/c": "1"}
	for _, cl := range []*testClient{a, b, c} {
		waitSystem(t, cl, "v2")
		wantVersions(t, cl, want)
	}
	if got := a.Conn.resources.Load() - before; got != 2 {
		t.Errorf("resources sent to node-a for v2 = %d, want 2 (workloads/a and workloads/c)", got)
	}

	// A patch of node-a must not leak into node-b's (shared) set.
	if err := srv.PatchNode("node-a", []*meshv1.Resource{workload("z", "1", "10.0.0.9")}, nil, "p1"); err != nil {
		t.Fatalf("PatchNode: %v", err)
	}
	waitSystem(t, a, "p1")
	if st, _ := srv.Node("node-b"); st.Resources != 3 {
		t.Errorf("node-b holds %d resources after node-a was patched, want 3", st.Resources)
	}
	fresh := startClient(t, srv, "node-b", nil)
	waitSystem(t, fresh, "v2")
	wantVersions(t, fresh, want)

	if err := srv.SetNodes([]string{"node-a", ""}, set2, "v3"); err == nil {
		t.Errorf("SetNodes with an empty node name = nil, want an error")
	}
}
