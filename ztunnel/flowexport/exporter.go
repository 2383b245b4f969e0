package flowexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	flowsv1 "github.com/weftmesh/weft/api/flows/v1"
)

// Defaults of Config.
const (
	DefaultSocket       = "/var/run/weft/flows-export.sock"
	DefaultQueueSize    = 8192
	DefaultBatchSize    = 256
	DefaultProducer     = "ztunnel"
	DefaultFlushTimeout = 2 * time.Second
	defaultMinBackoff   = 100 * time.Millisecond
	defaultMaxBackoff   = 5 * time.Second
)

// Reasons of weft_ztunnel_flows_lost_total.
const (
	// ReasonQueueFull: the queue was full while a stream was open (the agent
	// reads more slowly than the proxy produces).
	ReasonQueueFull = "queue_full"
	// ReasonAgentUnreachable: the queue was full while no stream was open.
	ReasonAgentUnreachable = "agent_unreachable"
	// ReasonSendFailed: the records of a request whose Send failed.
	ReasonSendFailed = "send_failed"
	// ReasonShutdown: records still queued when the shutdown flush ended
	// (or recorded after it); the only loss the agent is never told of.
	ReasonShutdown = "shutdown"
)

var reasons = [...]string{ReasonQueueFull, ReasonAgentUnreachable, ReasonSendFailed, ReasonShutdown}

const (
	iQueueFull = iota
	iAgentUnreachable
	iSendFailed
	iShutdown
)

// errStopping ends a session because Run's context ended.
var errStopping = errors.New("exporter stopping")

// Config configures an Exporter.
type Config struct {
	// Socket is the agent's flow export socket. Required.
	Socket string
	// QueueSize bounds the records waiting to be sent. Default
	// DefaultQueueSize.
	QueueSize int
	// BatchSize is the most records sent in one request. Default
	// DefaultBatchSize.
	BatchSize int
	// Producer names the producer in every request. Default
	// DefaultProducer.
	Producer string
	// FlushTimeout bounds the shutdown flush, once Run's context ends.
	// Default DefaultFlushTimeout.
	FlushTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay between connection
	// attempts. Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// Registerer receives weft_ztunnel_flows_exported_total and
	// weft_ztunnel_flows_lost_total; nil registers nothing.
	Registerer prometheus.Registerer
	// Log is where connection changes are logged; nil discards.
	Log *slog.Logger
}

// Stats are an Exporter's counters since New. Produced = Exported + the
// sum of Lost + what is queued or being sent.
type Stats struct {
	// Produced counts calls to Record.
	Produced uint64
	// Exported counts records in requests whose Send succeeded.
	Exported uint64
	// Lost counts lost records by reason (the keys are the Reason
	// constants).
	Lost map[string]uint64
	// Unreported is the part of Lost not yet sent in a request's lost
	// field.
	Unreported uint64
}

// Exporter sends flow records to the agent. Create it with New; Record may
// be called from any goroutine, before, during and after Run. It is safe
// for concurrent use.
type Exporter struct {
	cfg   Config
	log   *slog.Logger
	queue chan *flow.Flow
	// wake tells the sender that a record was lost, so the loss is
	// reported even when nothing else is queued.
	wake chan struct{}

	produced atomic.Uint64
	exported atomic.Uint64
	lost     [len(reasons)]atomic.Uint64
	// unreported is lost records not yet sent in a request's lost field.
	unreported atomic.Uint64
	connected  atomic.Bool
	stopped    atomic.Bool
	running    atomic.Bool

	// carry is only used by Run's goroutine: records taken from the queue
	// when ctx ended, sent first by the flush.
	carry []*flow.Flow

	exportedMetric prometheus.Counter
	lostMetric     [len(reasons)]prometheus.Counter
}

// New returns an Exporter for cfg, with its metrics registered. It does not
// connect: Run does.
func New(cfg Config) (*Exporter, error) {
	if cfg.Socket == "" {
		return nil, errors.New("new flow exporter: no socket")
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Producer == "" {
		cfg.Producer = DefaultProducer
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = DefaultFlushTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = defaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(defaultMaxBackoff, cfg.MinBackoff)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Exporter{
		cfg:   cfg,
		log:   log.With("component", "flowexport"),
		queue: make(chan *flow.Flow, cfg.QueueSize),
		wake:  make(chan struct{}, 1),
	}
	exported := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "weft_ztunnel_flows_exported_total",
		Help: "Flow records sent to the node's flow server (in requests whose send succeeded).",
	})
	lost := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_ztunnel_flows_lost_total",
		Help: "Flow records produced but not sent, by reason; all but reason=shutdown are reported to the flow server as lost.",
	}, []string{"reason"})
	e.exportedMetric = exported
	for i, r := range reasons {
		e.lostMetric[i] = lost.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{exported, lost} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register flow export metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Record queues f to be sent; it never blocks. When the queue is full, f is
// counted as lost (and reported to the agent as such). The Exporter owns f
// from then on: the caller must not modify it.
func (e *Exporter) Record(f *flow.Flow) {
	e.produced.Add(1)
	if e.stopped.Load() {
		e.lose(iShutdown, 1)
		return
	}
	select {
	case e.queue <- f:
	default:
		if e.connected.Load() {
			e.lose(iQueueFull, 1)
		} else {
			e.lose(iAgentUnreachable, 1)
		}
	}
}

// lose counts n lost records; all but shutdown losses are to be reported.
func (e *Exporter) lose(reason int, n uint64) {
	e.lost[reason].Add(n)
	e.lostMetric[reason].Add(float64(n))
	if reason == iShutdown {
		return
	}
	e.unreported.Add(n)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Stats returns the Exporter's counters.
func (e *Exporter) Stats() Stats {
	s := Stats{
		Produced:   e.produced.Load(),
		Exported:   e.exported.Load(),
		Unreported: e.unreported.Load(),
		Lost:       make(map[string]uint64, len(reasons)),
	}
	for i, r := range reasons {
		s.Lost[r] = e.lost[i].Load()
	}
	return s
}

// Run sends queued records to the agent until ctx ends, reconnecting with
// backoff while the agent is unreachable. Once ctx ends it flushes what is
// queued for at most Config.FlushTimeout, closes the stream and returns
// nil. Call Run once.
func (e *Exporter) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("run flow exporter: already running")
	}
	cc, err := grpc.NewClient("unix://"+e.cfg.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The agent restarts in seconds; gRPC's default reconnect backoff
		// grows to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: e.cfg.MinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: e.cfg.MaxBackoff},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		e.stopped.Store(true)
		return fmt.Errorf("run flow exporter: %w", err)
	}
	defer cc.Close()
	client := flowsv1.NewFlowExportClient(cc)
	// Streams outlive ctx by FlushTimeout: long enough for the shutdown
	// flush, and a Send stalled by an agent that does not read cannot
	// hold the proxy's exit longer.
	streams, cancelStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelStreams()
	context.AfterFunc(ctx, func() { time.AfterFunc(e.cfg.FlushTimeout, cancelStreams) })

	var (
		st    *stream
		delay = e.cfg.MinBackoff
		// logged is whether the agent's unreachability was logged since
		// the last stream.
		logged bool
	)
	for ctx.Err() == nil {
		if st == nil {
			st, err = e.open(ctx, streams, client)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				if !logged {
					e.log.Warn("flow server unreachable, retrying", "socket", e.cfg.Socket, "error", err.Error())
					logged = true
				}
				if !sleep(ctx, delay) {
					break
				}
				delay = min(2*delay, e.cfg.MaxBackoff)
				continue
			}
			e.log.Info("exporting flows", "socket", e.cfg.Socket)
			logged, delay = false, e.cfg.MinBackoff
		}
		err := e.sendLoop(ctx, st)
		if errors.Is(err, errStopping) {
			break
		}
		e.log.Warn("flow export stream ended, reconnecting", "error", err.Error())
		st.abort()
		st = nil
		// A server that takes streams and fails them must not make this a
		// busy loop.
		if !sleep(ctx, e.cfg.MinBackoff) {
			break
		}
	}
	e.flush(streams, client, st)
	return nil
}

// stream is one open Export call.
type stream struct {
	s      grpc.ClientStreamingClient[flowsv1.ExportRequest, flowsv1.ExportResponse]
	cancel context.CancelFunc
}

func (s *stream) abort() { s.cancel() }

// open starts an Export stream, giving up when ctx ends. The stream lives
// until streams ends or it is aborted.
func (e *Exporter) open(ctx, streams context.Context, client flowsv1.FlowExportClient) (*stream, error) {
	sctx, cancel := context.WithCancel(streams)
	// Opening may wait for the connection; Run's end must not wait for it.
	stop := context.AfterFunc(ctx, cancel)
	s, err := client.Export(sctx)
	if !stop() || err != nil {
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("open flow export stream on %s: %w", e.cfg.Socket, err)
	}
	e.connected.Store(true)
	return &stream{s: s, cancel: cancel}, nil
}

// sendLoop sends batches on st until ctx ends (errStopping) or a Send
// fails.
func (e *Exporter) sendLoop(ctx context.Context, st *stream) error {
	batch := make([]*flow.Flow, 0, e.cfg.BatchSize)
	for {
		batch = e.next(ctx, batch[:0])
		if ctx.Err() != nil {
			// The flush sends this batch first.
			e.carry = batch
			return errStopping
		}
		if err := e.send(st, batch); err != nil {
			return err
		}
	}
}

// next waits for at least one queued record, a loss to report or ctx's
// end, then takes up to a batch of queued records without waiting.
func (e *Exporter) next(ctx context.Context, batch []*flow.Flow) []*flow.Flow {
	select {
	case f := <-e.queue:
		batch = append(batch, f)
	case <-e.wake:
	case <-ctx.Done():
		return batch
	}
	return e.drain(batch)
}

// drain appends queued records to batch, without waiting, until it is full.
func (e *Exporter) drain(batch []*flow.Flow) []*flow.Flow {
	for len(batch) < e.cfg.BatchSize {
		select {
		case f := <-e.queue:
			batch = append(batch, f)
		default:
			return batch
		}
	}
	return batch
}

// send sends batch and the unreported lost count in one request. When the
// Send fails, the batch is counted as lost and the lost count it carried is
// unreported again, so the next stream reports both. A request with nothing
// to say is not sent.
func (e *Exporter) send(st *stream, batch []*flow.Flow) error {
	lost := e.unreported.Swap(0)
	if len(batch) == 0 && lost == 0 {
		return nil
	}
	err := st.s.Send(&flowsv1.ExportRequest{Flows: batch, Lost: lost, Producer: e.cfg.Producer})
	n := uint64(len(batch))
	clear(batch)
	if err != nil {
		e.connected.Store(false)
		e.unreported.Add(lost)
		e.lose(iSendFailed, n)
		return fmt.Errorf("send %d flows to %s: %w", n, e.cfg.Socket, err)
	}
	e.exported.Add(n)
	e.exportedMetric.Add(float64(n))
	return nil
}

// flush sends what is queued and what is unreported on st (or on a new
// stream when st is nil), then closes the stream and waits for the agent to
// have read it all, until ctx ends (FlushTimeout after Run's context).
// Records it could not send are lost with reason shutdown, as are records
// produced afterwards.
func (e *Exporter) flush(ctx context.Context, client flowsv1.FlowExportClient, st *stream) {
	defer func() {
		e.stopped.Store(true)
		e.connected.Store(false)
		// Whatever is left (or raced in before stopped) is never sent.
		n := uint64(len(e.carry) + len(e.drain(make([]*flow.Flow, 0, e.cfg.QueueSize))))
		e.carry = nil
		if n > 0 {
			e.lose(iShutdown, n)
		}
		if u := e.unreported.Load(); n+u > 0 {
			e.log.Warn("flows lost at shutdown", "queued", n, "unreported_lost", u)
		}
	}()
	if len(e.carry) == 0 && len(e.queue) == 0 && e.unreported.Load() == 0 && st == nil {
		return
	}
	if st == nil {
		var err error
		if st, err = e.open(ctx, ctx, client); err != nil {
			e.log.Warn("flush flows at shutdown", "error", err.Error())
			return
		}
	}
	defer st.abort()
	batch := make([]*flow.Flow, 0, e.cfg.BatchSize)
	for {
		batch = e.drain(append(batch[:0], e.carry...))
		e.carry = nil
		if len(batch) == 0 && e.unreported.Load() == 0 {
			break
		}
		if err := e.send(st, batch); err != nil {
			e.log.Warn("flush flows at shutdown", "error", err.Error())
			return
		}
	}
	if _, err := st.s.CloseAndRecv(); err != nil {
		e.log.Warn("close flow export stream", "error", err.Error())
	}
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
