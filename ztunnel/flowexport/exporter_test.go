package flowexport

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	flowsv1 "github.com/weftmesh/weft/api/flows/v1"
)

// fakeServer is an in-process FlowExport server that keeps what it reads.
type fakeServer struct {
	flowsv1.UnimplementedFlowExportServer
	// gate, when not nil, holds every stream until it is closed.
	gate chan struct{}
	// failStreams is how many streams, from the first, are failed at once.
	failStreams int

	started chan struct{} // one value per stream

	mu       sync.Mutex
	streams  int
	ids      []string // Uuid of every flow read, in order
	lost     uint64
	maxBatch int
	closed   int // streams that ended with the client's CloseSend
	producer string
}

func newFakeServer() *fakeServer { return &fakeServer{started: make(chan struct{}, 100)} }

func (s *fakeServer) Export(st grpc.ClientStreamingServer[flowsv1.ExportRequest, flowsv1.ExportResponse]) error {
	s.mu.Lock()
	s.streams++
	n := s.streams
	s.mu.Unlock()
	s.started <- struct{}{}
	if n <= s.failStreams {
		return status.Error(codes.Unavailable, "fake: stream refused")
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-st.Context().Done():
			return st.Context().Err()
		}
	}
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			s.mu.Lock()
			s.closed++
			s.mu.Unlock()
			return st.SendAndClose(&flowsv1.ExportResponse{})
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		for _, f := range req.Flows {
			s.ids = append(s.ids, f.Uuid)
		}
		s.lost += req.Lost
		s.maxBatch = max(s.maxBatch, len(req.Flows))
		s.producer = req.Producer
		s.mu.Unlock()
	}
}

// totals returns the flows read and the lost count reported.
func (s *fakeServer) totals() (flows int, lost uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids), s.lost
}

// serve serves s on a unix socket at path until the test ends or the
// returned stop is called.
func serve(tb testing.TB, path string, s *fakeServer) (stop func()) {
	tb.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatalf("listen %s: %v", path, err)
	}
	gs := grpc.NewServer()
	flowsv1.RegisterFlowExportServer(gs, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		gs.Serve(ln)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			gs.Stop()
			<-done
		})
	}
	tb.Cleanup(stop)
	return stop
}

// run runs e until the returned stop is called, which waits for Run's end.
func run(tb testing.TB, e *Exporter) (stop func() time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() time.Duration {
		var took time.Duration
		once.Do(func() {
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(30 * time.Second):
				tb.Fatal("Run did not return 30s after its context ended")
			}
			took = time.Since(start)
		})
		return took
	}
	tb.Cleanup(func() { stop() })
	return stop
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitStarted(tb testing.TB, s *fakeServer) {
	tb.Helper()
	select {
	case <-s.started:
	case <-time.After(20 * time.Second):
		tb.Fatal("the exporter opened no stream")
	}
}

func record(e *Exporter, n int, from int) {
	for i := range n {
		e.Record(&flow.Flow{Uuid: strconv.Itoa(from + i), NodeName: "padding-to-make-records-bigger"})
	}
}

func sumLost(s Stats) uint64 {
	var n uint64
	for _, v := range s.Lost {
		n += v
	}
	return n
}

func newExporter(tb testing.TB, cfg Config) *Exporter {
	tb.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	}
	e, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return e
}

// gathered is the value of counter name (with label reason, if not "") in
// what reg serves.
func gathered(tb testing.TB, reg prometheus.Gatherer, name, reason string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if reason == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	tb.Fatalf("no %s{reason=%q} gathered", name, reason)
	return 0
}

func sockPath(tb testing.TB) string { return filepath.Join(tb.TempDir(), "flows.sock") }

// TestExactUnderFullQueue: the agent does not read while the proxy produces
// far more than the queue holds; Record never blocks, and once the agent
// reads again every record is either delivered or reported lost.
func TestExactUnderFullQueue(t *testing.T) {
	path := sockPath(t)
	srv := newFakeServer()
	srv.gate = make(chan struct{})
	serve(t, path, srv)
	reg := prometheus.NewPedanticRegistry()
	e := newExporter(t, Config{Socket: path, QueueSize: 8, BatchSize: 4, Registerer: reg})
	stop := run(t, e)
	waitStarted(t, srv)

	const produced = 20000
	record(e, produced, 0) // blocks the test if Record blocks
	close(srv.gate)
	stop()

	flows, lost := srv.totals()
	if uint64(flows)+lost != produced {
		t.Errorf("delivered %d + reported lost %d = %d, want %d", flows, lost, uint64(flows)+lost, produced)
	}
	if lost == 0 {
		t.Errorf("reported lost = 0; a queue of 8 cannot have held %d records", produced)
	}
	st := e.Stats()
	if st.Produced != produced || st.Exported != uint64(flows) || sumLost(st) != lost || st.Unreported != 0 {
		t.Errorf("Stats = %+v, want Produced %d, Exported %d, lost %d, none unreported", st, produced, flows, lost)
	}
	if st.Lost[ReasonQueueFull] != lost {
		t.Errorf("lost with reason %s = %d, want all %d", ReasonQueueFull, st.Lost[ReasonQueueFull], lost)
	}
	if got := gathered(t, reg, "weft_ztunnel_flows_exported_total", ""); got != float64(flows) {
		t.Errorf("weft_ztunnel_flows_exported_total = %v, want %d", got, flows)
	}
	if got := gathered(t, reg, "weft_ztunnel_flows_lost_total", ReasonQueueFull); got != float64(lost) {
		t.Errorf("weft_ztunnel_flows_lost_total{reason=queue_full} = %v, want %d", got, lost)
	}
	if srv.maxBatch > 4 {
		t.Errorf("largest request had %d flows, want at most BatchSize 4", srv.maxBatch)
	}
	if srv.producer != DefaultProducer {
		t.Errorf("producer = %q, want %q", srv.producer, DefaultProducer)
	}
	// What was delivered arrived in the order it was produced.
	last := -1
	for _, id := range srv.ids {
		n, _ := strconv.Atoi(id)
		if n <= last {
			t.Fatalf("flow %d arrived after flow %d", n, last)
		}
		last = n
	}
}

// TestAgentUnreachable: records produced before the agent listens wait in
// the queue, the overflow is counted as agent_unreachable, and both reach
// the agent once it is up.
func TestAgentUnreachable(t *testing.T) {
	path := sockPath(t)
	e := newExporter(t, Config{Socket: path, QueueSize: 10})
	stop := run(t, e)
	record(e, 100, 0)
	if got := e.Stats().Lost[ReasonAgentUnreachable]; got != 90 {
		t.Fatalf("lost with reason %s = %d, want 90", ReasonAgentUnreachable, got)
	}

	srv := newFakeServer()
	serve(t, path, srv)
	waitFor(t, "the queued records and the loss to reach the agent", func() bool {
		f, l := srv.totals()
		return uint64(f)+l == 100
	})
	if f, l := srv.totals(); f != 10 || l != 90 {
		t.Errorf("agent read %d flows and %d lost, want 10 and 90", f, l)
	}
	record(e, 5, 100)
	waitFor(t, "new records after the reconnect", func() bool { f, _ := srv.totals(); return f == 15 })
	stop()
}

// TestSendFailureReported: a stream the agent fails costs the records of
// the request whose Send failed; they are reported lost on the next stream.
func TestSendFailureReported(t *testing.T) {
	path := sockPath(t)
	srv := newFakeServer()
	srv.failStreams = 1
	serve(t, path, srv)
	e := newExporter(t, Config{Socket: path})
	stop := run(t, e)
	waitStarted(t, srv)

	// A Send can succeed into a stream the agent already ended (gRPC has
	// not seen the end yet); keep producing until one fails.
	produced := 0
	waitFor(t, "a failed send", func() bool {
		record(e, 1, produced)
		produced++
		return e.Stats().Lost[ReasonSendFailed] > 0
	})
	waitStarted(t, srv) // the second stream
	failed := e.Stats().Lost[ReasonSendFailed]
	waitFor(t, "the failed send to be reported", func() bool { _, l := srv.totals(); return l == failed })
	record(e, 3, produced)
	waitFor(t, "records on the new stream", func() bool { f, _ := srv.totals(); return f >= 3 })
	stop()
	st := e.Stats()
	if st.Produced != st.Exported+sumLost(st) {
		t.Errorf("Stats = %+v: produced != exported + lost", st)
	}
}

// TestShutdownFlush: records queued when the proxy stops reach the agent
// before Run returns.
func TestShutdownFlush(t *testing.T) {
	path := sockPath(t)
	srv := newFakeServer()
	srv.gate = make(chan struct{})
	serve(t, path, srv)
	e := newExporter(t, Config{Socket: path, QueueSize: 2000, FlushTimeout: 10 * time.Second})
	stop := run(t, e)
	waitStarted(t, srv)
	record(e, 1000, 0)
	go func() {
		time.Sleep(50 * time.Millisecond)
		close(srv.gate)
	}()
	stop()
	if f, l := srv.totals(); f != 1000 || l != 0 {
		t.Errorf("agent read %d flows and %d lost before Run returned, want 1000 and 0", f, l)
	}
	srv.mu.Lock()
	closed := srv.closed
	srv.mu.Unlock()
	if closed != 1 {
		t.Errorf("streams closed by the exporter = %d, want 1", closed)
	}
}

// TestShutdownTimeout: an agent that never reads does not hold the proxy's
// exit past the flush timeout; what could not be sent is counted lost with
// reason shutdown, as is anything recorded afterwards.
func TestShutdownTimeout(t *testing.T) {
	path := sockPath(t)
	srv := newFakeServer()
	srv.gate = make(chan struct{}) // never opened
	serve(t, path, srv)
	e := newExporter(t, Config{Socket: path, QueueSize: 100, FlushTimeout: 200 * time.Millisecond})
	stop := run(t, e)
	waitStarted(t, srv)
	record(e, 50000, 0)
	if took := stop(); took > 5*time.Second {
		t.Errorf("Run returned %v after its context ended, want about the 200ms flush timeout", took)
	}
	record(e, 7, 50000)
	st := e.Stats()
	if st.Produced != st.Exported+sumLost(st) {
		t.Errorf("Stats = %+v: produced != exported + lost", st)
	}
	if st.Lost[ReasonShutdown] < 7 {
		t.Errorf("lost with reason shutdown = %d, want at least the 7 recorded after Run", st.Lost[ReasonShutdown])
	}
}
