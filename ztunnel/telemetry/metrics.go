package telemetry

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics records the node proxy's connections: Istio's TCP metrics, weft's
// own counters and the access log. It is safe for concurrent use.
//
// Bytes counted on an open connection reach the Prometheus counters when
// the registry is gathered (every scrape) and when the connection closes,
// so a scrape during a long transfer sees the bytes so far without a timer
// or a goroutine per connection, and an idle node does no work between
// scrapes.
type Metrics struct {
	log *slog.Logger
	now func() time.Time

	opened   *prometheus.CounterVec
	closed   *prometheus.CounterVec
	sent     *prometheus.CounterVec
	received *prometheus.CounterVec
	denied   *prometheus.CounterVec
	errors   *prometheus.CounterVec
	active   *prometheus.GaugeVec
	// activeBy caches active's child per Reporter (index 0 = unknown).
	activeBy [3]prometheus.Gauge

	// seriesMu guards seriesBy, the Istio series of every label set seen,
	// keyed by the unsanitized values. Entries are never removed: the
	// registry keeps every series it was given too, so this costs no more
	// than the series themselves.
	seriesMu sync.RWMutex
	seriesBy map[labelSet]*series

	// flows receives the flow records; nil for none. Set before use.
	flows FlowSink

	// mu guards the fields below and every open Conn's flushed counts.
	mu sync.Mutex
	// live is the sentinel of the circular list of open connections, the
	// ones whose bytes a gather must flush.
	live Conn
}

// New creates the metrics and registers them on reg. Access-log lines go to
// log (callers usually pass a logger tagged for the access log).
func New(reg prometheus.Registerer, log *slog.Logger) (*Metrics, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	istio := istioLabels[:]
	m := &Metrics{
		log:      log,
		now:      time.Now,
		seriesBy: map[labelSet]*series{},
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_opened_total",
			Help: "The total number of TCP connections opened",
		}, istio),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_closed_total",
			Help: "The total number of TCP connections closed",
		}, istio),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_sent_bytes_total",
			Help: "The size of total bytes sent during response in case of a TCP connection",
		}, istio),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_received_bytes_total",
			Help: "The size of total bytes received during request in case of a TCP connection",
		}, istio),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_ztunnel_connections_denied_total",
			Help: "Connections refused by authorization policy; reason_policy is the deciding policy, or the reason when no policy decided.",
		}, []string{"reporter", "destination_workload", "destination_workload_namespace", "source_principal", "reason_policy"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_ztunnel_connection_errors_total",
			Help: "Connections that ended with an error or failed before they were proxied, by direction and kind of error.",
		}, []string{"direction", "kind"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_ztunnel_active_connections",
			Help: "Connections being proxied now, by direction.",
		}, []string{"direction"}),
	}
	for r := range m.activeBy {
		m.activeBy[r] = m.active.WithLabelValues(Reporter(r).direction())
	}
	m.live.next, m.live.prev = &m.live, &m.live
	if err := reg.Register(collector{m}); err != nil {
		return nil, fmt.Errorf("register ztunnel telemetry metrics: %w", err)
	}
	return m, nil
}

// collector is how Metrics is registered: one Collector, so that a gather
// can flush the open connections' bytes before it reads the byte counters.
type collector struct{ m *Metrics }

func (c collector) vecs() [7]prometheus.Collector {
	m := c.m
	return [...]prometheus.Collector{m.opened, m.closed, m.sent, m.received, m.denied, m.errors, m.active}
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.vecs() {
		v.Describe(ch)
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.m.flush()
	for _, v := range c.vecs() {
		v.Collect(ch)
	}
}

// series are the Istio counters of one label set, looked up once per
// connection: client_golang hashes and validates all 23 values on every
// lookup, which is most of what an Open would cost.
type series struct {
	labels   labelSet // sanitized; response_flags "-"
	opened   prometheus.Counter
	sent     prometheus.Counter
	received prometheus.Counter

	// closedOK (response_flags "-") is made at the first such close, so a
	// label set that only ever sees denials has no zero series of it.
	closedOnce sync.Once
	closedOK   prometheus.Counter
}

func (m *Metrics) seriesFor(l *labelSet) *series {
	m.seriesMu.RLock()
	s := m.seriesBy[*l]
	m.seriesMu.RUnlock()
	if s != nil {
		return s
	}
	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	if s := m.seriesBy[*l]; s != nil {
		return s
	}
	s = &series{labels: *l}
	s.labels.sanitize()
	lv := s.labels[:]
	s.opened = m.opened.WithLabelValues(lv...)
	// Bytes are reported under the labels of the open (response_flags
	// "-"), as Istio's ztunnel does: that is what lets the counters be
	// resolved once per connection instead of at every flush. Like
	// ztunnel's, they exist (at 0) as soon as a connection with these
	// labels opens.
	s.sent = m.sent.WithLabelValues(lv...)
	s.received = m.received.WithLabelValues(lv...)
	m.seriesBy[*l] = s
	return s
}

// closedWith is the closed counter for flags.
func (m *Metrics) closedWith(s *series, flags ResponseFlags) prometheus.Counter {
	f := flags.value()
	if f == string(FlagNone) {
		s.closedOnce.Do(func() { s.closedOK = m.closed.WithLabelValues(s.labels[:]...) })
		return s.closedOK
	}
	l := s.labels
	l[lResponseFlags] = f
	return m.closed.WithLabelValues(l[:]...)
}

// Open records a connection that is about to be proxied and returns the
// handle its byte counts and its end are recorded on. Every Conn must be
// closed.
func (m *Metrics) Open(info ConnInfo) *Conn {
	c := &Conn{m: m, info: info, start: m.now()}
	l := resolveLabels(&c.info)
	c.s = m.seriesFor(&l)
	c.s.opened.Inc()
	m.activeGauge(info.Reporter).Inc()

	m.mu.Lock()
	c.prev, c.next = m.live.prev, &m.live
	m.live.prev.next = c
	m.live.prev = c
	m.mu.Unlock()
	if m.flows != nil {
		m.flowOpen(c)
	}
	return c
}

// Denied records a connection that authorization refused, before any byte
// was proxied. As Istio's ztunnel does for an RBAC denial, it counts as
// opened (response_flags "-") and closed with response_flags "DENY"; it also
// counts weft_ztunnel_connections_denied_total and writes a "connection
// denied" access-log line. policy names the deciding policy (a
// TrafficTarget's namespace/name), "" when none decided; reason says why.
// The label reason_policy is policy, or reason when policy is "", so reason
// must come from a small fixed set (never carry addresses or ports).
func (m *Metrics) Denied(info ConnInfo, policy, reason string) {
	l := resolveLabels(&info)
	s := m.seriesFor(&l)
	s.opened.Inc()
	m.closedWith(s, FlagDenied).Inc()
	reasonPolicy := first(policy, reason, unknown)
	if !utf8.ValidString(reasonPolicy) {
		reasonPolicy = strings.ToValidUTF8(reasonPolicy, "\uFFFD")
	}
	m.denied.WithLabelValues(s.labels[lReporter], s.labels[lDestinationWorkload],
		s.labels[lDestinationWorkloadNamespace], s.labels[lSourcePrincipal], reasonPolicy).Inc()
	m.logDenied(&info, &s.labels, policy, reason)
	if m.flows != nil {
		m.flowDenied(&info, policy, reason)
	}
}

// DeniedByPeer records an outbound connection that the destination's proxy
// refused by policy (an HBONE 403): like Failed, it counts
// weft_ztunnel_connection_errors_total and writes a "connection failed"
// line (the destination counts the denial); it also produces the source
// side's deny flow record, with reason as the destination gave it.
func (m *Metrics) DeniedByPeer(info ConnInfo, reason string, err error) {
	m.Failed(info, err)
	if m.flows != nil {
		m.flowDenied(&info, "", reason)
	}
}

// Failed records a connection that broke before it could be described or
// proxied (a failed handshake, no original destination): it counts
// weft_ztunnel_connection_errors_total and writes a "connection failed"
// access-log line with what info knows (at least the addresses and the
// reporter). It does not count as opened, as in Istio's ztunnel.
func (m *Metrics) Failed(info ConnInfo, err error) {
	dir := info.Reporter.direction()
	m.errors.WithLabelValues(dir, ErrorKind(err)).Inc()
	m.logFailed(&info, err)
}

func (m *Metrics) activeGauge(r Reporter) prometheus.Gauge {
	if int(r) >= len(m.activeBy) {
		r = 0
	}
	return m.activeBy[r]
}

// flush moves the bytes counted on every open connection since the last
// flush into the Prometheus counters.
func (m *Metrics) flush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for c := m.live.next; c != &m.live; c = c.next {
		c.flushLocked()
	}
}

// Conn is one open connection's telemetry. Sent and Received may be called
// from any goroutine, concurrently with each other and with Close; Close
// must be called once (later calls do nothing).
type Conn struct {
	// Set by Open, then read-only.
	m     *Metrics
	info  ConnInfo
	start time.Time
	s     *series

	sent   atomic.Uint64
	recv   atomic.Uint64
	closed atomic.Bool

	// The flow records' endpoints, set by Open when there is a FlowSink.
	srcEP, dstEP *flow.Endpoint

	// m.mu guards the fields below.
	prev, next             *Conn // in m.live while open
	flushedSent, flushedRv uint64
}

// Sent counts n bytes sent to the connection's client (the response
// direction, istio_tcp_sent_bytes_total).
func (c *Conn) Sent(n int) {
	if n > 0 {
		c.sent.Add(uint64(n))
	}
}

// Received counts n bytes received from the connection's client and
// forwarded to its server (the request direction,
// istio_tcp_received_bytes_total).
func (c *Conn) Received(n int) {
	if n > 0 {
		c.recv.Add(uint64(n))
	}
}

// Close records the connection's end: flags says how it ended ("" means
// FlagNone) and err is the error that ended it, nil for a clean close. It
// counts istio_tcp_connections_closed_total, flushes the byte counts, counts
// weft_ztunnel_connection_errors_total when err is not nil, and writes the
// "connection complete" access-log line. Bytes counted after Close are not
// reported.
func (c *Conn) Close(flags ResponseFlags, err error) {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	m := c.m
	end := m.now()

	m.mu.Lock()
	c.prev.next, c.next.prev = c.next, c.prev
	c.prev, c.next = nil, nil
	c.flushLocked()
	m.mu.Unlock()

	m.closedWith(c.s, flags).Inc()
	m.activeGauge(c.info.Reporter).Dec()
	if err != nil {
		m.errors.WithLabelValues(c.info.Reporter.direction(), ErrorKind(err)).Inc()
	}
	m.logComplete(c, flags, err, end.Sub(c.start))
	if m.flows != nil {
		m.flowClose(c, flags, err, end)
	}
}

// flushLocked adds the bytes counted since the last flush to the counters.
// c.m.mu must be held: it is what keeps two flushes of c from adding the
// same bytes twice.
func (c *Conn) flushLocked() {
	if s := c.sent.Load(); s != c.flushedSent {
		c.s.sent.Add(float64(s - c.flushedSent))
		c.flushedSent = s
	}
	if r := c.recv.Load(); r != c.flushedRv {
		c.s.received.Add(float64(r - c.flushedRv))
		c.flushedRv = r
	}
}
