package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/daemon/flows"
	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/flowexport"
	"github.com/weftmesh/weft/ztunnel/state"
	"github.com/weftmesh/weft/ztunnel/telemetry"
)

const (
	overloadDuration = 10 * time.Second
	// The follower sleeps followPause after every followEvery responses:
	// at most ~500 responses/s, below what the agent ingests even on a
	// loaded machine under the race detector (~1.4k/s), so the ring laps it.
	followEvery = 1
	followPause = 2 * time.Millisecond
	// overloadRing is small so that the slow follower is lapped.
	overloadRing = 4096
)

// TestFlowsOverload: ztunnel's real export path (telemetry's record
// building, flowexport's bounded queue and batching) feeds the agent's real
// flow server over a real unix socket as fast as it goes for 10 s, while a
// Hubble follower reads slowly. Records are lost at both bounded stages —
// the exporter's queue (reported in ExportRequest.lost, seen as
// OBSERVER_EVENTS_QUEUE LostEvents) and the ring that laps the follower
// (HUBBLE_RING_BUFFER LostEvents) — and yet, for the follower, flows
// received + events reported lost = records produced, exactly.
func TestFlowsOverload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	// The agent's flow server, on its real unix sockets.
	srv, err := flows.New(flows.Config{NodeName: "overload", RingSize: overloadRing, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("flows.New: %v", err)
	}
	exportSock, observerSock := filepath.Join(dir, "flows-export.sock"), filepath.Join(dir, "hubble.sock")
	exportLn := listenUnix(t, exportSock)
	observerLn := listenUnix(t, observerSock)
	sctx, stopServer := context.WithCancel(ctx)
	var served sync.WaitGroup
	for _, run := range []func() error{
		func() error { return srv.ServeExport(sctx, exportLn) },
		func() error { return srv.ServeObserver(sctx, observerLn) },
	} {
		served.Go(func() {
			if err := run(); err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	defer func() {
		stopServer()
		served.Wait()
	}()

	// The slow follower.
	fol := follow(t, ctx, observerSock)

	// ztunnel's side: telemetry producing records into the exporter.
	// The test checks exactness, not shutdown latency: the flush of a full
	// queue gets all the time it needs on a loaded machine.
	exp, err := flowexport.New(flowexport.Config{Socket: exportSock, FlushTimeout: 30 * time.Second, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("flowexport.New: %v", err)
	}
	ectx, stopExport := context.WithCancel(ctx)
	exported := make(chan error, 1)
	go func() { exported <- exp.Run(ectx) }()
	m, err := telemetry.New(prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatalf("telemetry.New: %v", err)
	}
	m.SetFlowSink(exp)

	// Sync: the follower starts at the ring's end, so find the first record
	// it sees; the test counts what was produced after that one.
	var base uint64
	producedAfter := map[string]uint64{} // sync record → records produced up to it
	for i := 0; base == 0; i++ {
		if i > 100 {
			t.Fatal("the follower never saw a sync record")
		}
		id := fmt.Sprintf("sync-%d", i)
		exp.Record(&flowpb.Flow{Uuid: id})
		producedAfter[id] = exp.Stats().Produced
		select {
		case first := <-fol.first:
			base = producedAfter[first]
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the follower never saw a sync record")
		}
	}

	// Overload: every core produces connections (an open and a close
	// record each) for overloadDuration.
	var (
		stop  atomic.Bool
		conns atomic.Uint64
		prod  sync.WaitGroup
	)
	start, cpu0 := time.Now(), cpuTime(t)
	for range runtime.GOMAXPROCS(0) {
		prod.Go(func() {
			info := overloadConn()
			var n uint64
			for !stop.Load() {
				c := m.Open(info)
				c.Received(512)
				c.Sent(4096)
				c.Close(telemetry.FlagNone, nil)
				n++
			}
			conns.Add(n)
		})
	}
	time.Sleep(overloadDuration)
	stop.Store(true)
	prod.Wait()
	elapsed, cpu := time.Since(start), cpuTime(t)-cpu0

	// Stop the exporter: its flush ends with CloseAndRecv, so the agent
	// has read everything it was sent.
	stopExport()
	if err := <-exported; err != nil {
		t.Fatalf("exporter Run: %v", err)
	}
	st := exp.Stats()
	if st.Lost[flowexport.ReasonShutdown] != 0 || st.Unreported != 0 {
		t.Fatalf("exporter stats %+v: records lost at shutdown are never reported; the flush did not finish", st)
	}
	produced := st.Produced - base
	if want := 2*conns.Load() + base; st.Produced != want {
		t.Errorf("exporter counted %d records, want %d (2 per connection + %d sync)", st.Produced, want, base)
	}

	got := fol.await(t, produced, 60*time.Second)
	rate := float64(produced) / elapsed.Seconds()
	t.Logf("produced %d records in %v through telemetry + flowexport: %.0f records/s (%d connections); the process (producers, exporter, flow server, follower) used %v of CPU, %.0f records per CPU-second, on %d cores",
		produced, elapsed.Round(time.Millisecond), rate, conns.Load(), cpu.Round(time.Millisecond), float64(produced)/cpu.Seconds(), runtime.GOMAXPROCS(0))
	t.Logf("exporter: exported %d (%.0f/s delivered to the agent), lost %v; follower: %d flows, %d lost in the ring (HUBBLE_RING_BUFFER), %d lost at the exporter (OBSERVER_EVENTS_QUEUE)",
		st.Exported, float64(st.Exported)/elapsed.Seconds(), st.Lost, got.flows, got.ringLost, got.exportLost)
	fmt.Printf("FLOWS OVERLOAD: %.0f records/s for %v (%d produced, %.0f per CPU-second) with a follower reading <=%d/s: follower %d flows + %d ring-lost + %d exporter-lost = %d (want %d)\n",
		rate, elapsed.Round(time.Millisecond), produced, float64(produced)/cpu.Seconds(), int(float64(followEvery)/followPause.Seconds()),
		got.flows, got.ringLost, got.exportLost, got.total(), produced)

	if got.total() != produced {
		t.Errorf("follower: %d flows + %d ring-lost + %d exporter-lost = %d, want %d produced",
			got.flows, got.ringLost, got.exportLost, got.total(), produced)
	}
	if got.ringLost == 0 {
		t.Errorf("the ring never lapped the slow follower: the test did not overload the flow server")
	}
	if st.Lost[flowexport.ReasonQueueFull] == 0 {
		t.Logf("the exporter's queue never overflowed: the agent kept up with the producers")
	}
	if got.exportLost != st.Lost[flowexport.ReasonQueueFull]+st.Lost[flowexport.ReasonAgentUnreachable]+st.Lost[flowexport.ReasonSendFailed] {
		t.Errorf("follower saw %d exporter-lost, the exporter reported %v", got.exportLost, st.Lost)
	}
}

// cpuTime is the CPU time (user + system) the test process used so far.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func listenUnix(tb testing.TB, path string) net.Listener {
	tb.Helper()
	ln, err := flows.ListenUnix(path)
	if err != nil {
		tb.Fatalf("listen %s: %v", path, err)
	}
	return ln
}

// overloadConn is a meshed connection as the source node's proxy reports
// it.
func overloadConn() telemetry.ConnInfo {
	web := &state.Workload{Namespace: "shop", Name: "web-1", ServiceAccount: "web", App: "web", Version: "v1", WorkloadName: "web"}
	echo := &state.Workload{Namespace: "shop", Name: "echo-1", ServiceAccount: "echo", App: "echo"}
	return telemetry.ConnInfo{
		Reporter:    telemetry.ReporterSource,
		Source:      telemetry.Peer{Workload: web, Identity: spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"}, Addr: netip.MustParseAddrPort("10.1.0.5:40312")},
		Destination: telemetry.Peer{Workload: echo, Identity: spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "echo"}, Addr: netip.MustParseAddrPort("10.1.1.7:15008")},
		Service:     &state.Service{Namespace: "shop", Name: "echo", Hostname: "echo.shop.svc.cluster.local"},
		MutualTLS:   true,
		HBONEAddr:   netip.MustParseAddrPort("10.1.1.7:8080"),
	}
}

// follower is a slow GetFlows(follow) reader that counts, from the first
// sync record it sees, the flows and the losses it is told of.
type follower struct {
	first chan string // the Uuid of the first sync record seen
	done  chan error

	mu         sync.Mutex
	counts     followCounts
	lastChange time.Time
}

type followCounts struct {
	flows, ringLost, exportLost, otherLost uint64
}

func (c followCounts) total() uint64 { return c.flows + c.ringLost + c.exportLost + c.otherLost }

func follow(tb testing.TB, ctx context.Context, sock string) *follower {
	tb.Helper()
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("dial observer: %v", err)
	}
	tb.Cleanup(func() { cc.Close() })
	fctx, cancel := context.WithCancel(ctx)
	stream, err := observerpb.NewObserverClient(cc).GetFlows(fctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		cancel()
		tb.Fatalf("GetFlows: %v", err)
	}
	f := &follower{first: make(chan string, 1), done: make(chan error, 1)}
	go func() { f.done <- f.read(stream) }()
	tb.Cleanup(func() {
		cancel()
		// The server stopping first ends the stream with EOF.
		if err := <-f.done; err != nil && status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) {
			tb.Errorf("follower: %v", err)
		}
	})
	return f
}

func (f *follower) read(stream grpc.ServerStreamingClient[observerpb.GetFlowsResponse]) error {
	started := false
	for n := 1; ; n++ {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if n%followEvery == 0 {
			time.Sleep(followPause)
		}
		if !started {
			if id := resp.GetFlow().GetUuid(); len(id) > 5 && id[:5] == "sync-" {
				started = true
				f.first <- id
			}
			continue
		}
		f.mu.Lock()
		switch {
		case resp.GetFlow() != nil:
			f.counts.flows++
		case resp.GetLostEvents() != nil:
			le := resp.GetLostEvents()
			switch le.GetSource() {
			case flowpb.LostEventSource_HUBBLE_RING_BUFFER:
				f.counts.ringLost += le.GetNumEventsLost()
			case flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE:
				f.counts.exportLost += le.GetNumEventsLost()
			default:
				f.counts.otherLost += le.GetNumEventsLost()
			}
		}
		f.lastChange = time.Now()
		f.mu.Unlock()
	}
}

// await waits until the follower accounted for want events, then for a
// quiet second (so that an excess shows), and returns its counts.
func (f *follower) await(tb testing.TB, want uint64, timeout time.Duration) followCounts {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f.mu.Lock()
		c, last := f.counts, f.lastChange
		f.mu.Unlock()
		if c.total() >= want && time.Since(last) > time.Second || time.Now().After(deadline) {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
}
