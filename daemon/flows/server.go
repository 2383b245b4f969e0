package flows

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultRingSize is the ring capacity when Config.RingSize is 0.
const DefaultRingSize = 4096

// ObserverServiceName is the gRPC health service name Hubble clients check.
const ObserverServiceName = "hubble.server.Observer"

// Config configures a Server.
type Config struct {
	// NodeName is this node's name, stamped on every flow; required.
	NodeName string
	// NodeAddress is the node's IP, reported by GetNodes; optional.
	NodeAddress string
	// RingSize is the number of records the ring holds (flows and
	// producer-reported losses); 0 means DefaultRingSize.
	RingSize int
	// Version is weft's version; ServerStatus and GetNodes report
	// "weft/<Version>". "" means "dev".
	Version string
	// Registerer receives the server's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Log is the server's logger; nil discards.
	Log *slog.Logger
}

// Server is a node's flow server: it stores flow records from producers
// (FlowExport, Add) in a bounded ring and serves them with Hubble's
// Observer API. Create it with New; serve it with ServeExport,
// ServeObserver and ServeObserverTLS, each on as many listeners as needed.
//
// Server is safe for concurrent use.
type Server struct {
	nodeName string
	address  string
	version  string
	log      *slog.Logger
	ring     *ring
	metrics  *metrics
	started  time.Time

	// tlsServerName is the server name of the TLS listener, once one runs.
	tlsServerName atomic.Pointer[string]
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("create flow server: no node name")
	}
	if cfg.RingSize < 0 {
		return nil, fmt.Errorf("create flow server: ring size %d < 0", cfg.RingSize)
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = DefaultRingSize
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := newMetrics(cfg.Registerer, cfg.RingSize)
	if err != nil {
		return nil, fmt.Errorf("create flow server: register metrics: %w", err)
	}
	return &Server{
		nodeName: cfg.NodeName,
		address:  cfg.NodeAddress,
		version:  "weft/" + cfg.Version,
		log:      cfg.Log.With("component", "flows"),
		ring:     newRing(cfg.RingSize),
		metrics:  m,
		started:  time.Now(),
	}, nil
}

// Add stores f in the ring, for in-process producers (the datapath). It
// never blocks on readers. Add sets f's node_name to this node, and its
// time and uuid when missing; f belongs to the Server afterwards and must
// not be modified.
func (s *Server) Add(f *flowpb.Flow) {
	if f == nil {
		return
	}
	f.NodeName = s.nodeName
	if f.Time == nil {
		f.Time = timestamppb.Now()
	}
	if f.Uuid == "" {
		f.Uuid = newUUID()
	}
	s.ring.push(entry{flow: f})
	s.metrics.seen.Inc()
}

// AddLost records that n flow records were lost at source before reaching
// the ring (a producer's full queue: OBSERVER_EVENTS_QUEUE; the datapath's
// ring: PERF_EVENT_RING_BUFFER). Every reader gets a LostEvent with that
// count. n == 0 is a no-op.
func (s *Server) AddLost(source flowpb.LostEventSource, n uint64) {
	if n == 0 {
		return
	}
	now := timestamppb.Now()
	s.ring.push(entry{lost: &flowpb.LostEvent{Source: source, NumEventsLost: n, First: now, Last: now}})
	s.metrics.lost.WithLabelValues(lostReason(source)).Add(float64(n))
}

// newUUID is a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		b[i] = byte(hi >> (56 - 8*i))
		b[8+i] = byte(lo >> (56 - 8*i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
