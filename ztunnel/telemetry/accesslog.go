package telemetry

import (
	"context"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/weftmesh/weft/ztunnel/state"
)

// Access-log messages.
const (
	msgComplete = "connection complete"
	msgDenied   = "connection denied"
	msgFailed   = "connection failed"
)

// The access log's keys are flat and dotted ("src.addr"), not slog groups,
// so the JSON matches the keys of Istio's ztunnel access log.

func (m *Metrics) logComplete(c *Conn, flags ResponseFlags, err error, d time.Duration) {
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
	}
	ctx := context.Background()
	if !m.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 20)
	attrs = appendPeers(attrs, &c.info, &c.s.labels)
	// The metrics call the request direction "received" for both
	// reporters; the log reports bytes from the local workload's point of
	// view, as ztunnel's log does.
	sent, recv := c.sent.Load(), c.recv.Load()
	if c.info.Reporter == ReporterSource {
		sent, recv = recv, sent
	}
	attrs = append(attrs,
		slog.Uint64("bytes_sent", sent),
		slog.Uint64("bytes_recv", recv),
		slog.Float64("duration", millis(d)),
	)
	if f := flags.value(); f != string(FlagNone) {
		attrs = append(attrs, slog.String("response_flags", f))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	m.log.LogAttrs(ctx, level, msgComplete, attrs...)
}

func (m *Metrics) logDenied(info *ConnInfo, l *labelSet, policy, reason string) {
	ctx := context.Background()
	if !m.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	attrs := make([]slog.Attr, 0, 20)
	attrs = appendPeers(attrs, info, l)
	attrs = append(attrs,
		slog.Uint64("bytes_sent", 0),
		slog.Uint64("bytes_recv", 0),
		slog.String("response_flags", string(FlagDenied)),
	)
	if policy != "" {
		attrs = append(attrs, slog.String("policy", policy))
	}
	attrs = append(attrs, slog.String("reason", reason))
	m.log.LogAttrs(ctx, slog.LevelWarn, msgDenied, attrs...)
}

func (m *Metrics) logFailed(info *ConnInfo, err error) {
	ctx := context.Background()
	if !m.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	attrs := make([]slog.Attr, 0, 6)
	attrs = appendAddr(attrs, "src.addr", sourceAddr(info))
	attrs = appendAddr(attrs, "dst.addr", info.Destination.Addr)
	attrs = appendAddr(attrs, "dst.hbone_addr", info.HBONEAddr)
	attrs = append(attrs, slog.String("direction", info.Reporter.direction()))
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	m.log.LogAttrs(ctx, slog.LevelWarn, msgFailed, attrs...)
}

// appendPeers appends the fields that describe both ends. Fields with no
// value are left out rather than logged as "unknown". Identities are logged
// only for mTLS, where they were verified, as ztunnel does.
func appendPeers(attrs []slog.Attr, info *ConnInfo, l *labelSet) []slog.Attr {
	attrs = appendAddr(attrs, "src.addr", sourceAddr(info))
	attrs = appendKnown(attrs, "src.workload", podName(info.Source.Workload, l[lSourceCanonicalService]))
	attrs = appendKnown(attrs, "src.namespace", l[lSourceWorkloadNamespace])
	if info.MutualTLS {
		attrs = appendKnown(attrs, "src.identity", l[lSourcePrincipal])
	}
	attrs = appendAddr(attrs, "dst.addr", info.Destination.Addr)
	attrs = appendAddr(attrs, "dst.hbone_addr", info.HBONEAddr)
	attrs = appendKnown(attrs, "dst.service", l[lDestinationService])
	attrs = appendKnown(attrs, "dst.workload", podName(info.Destination.Workload, l[lDestinationCanonicalService]))
	attrs = appendKnown(attrs, "dst.namespace", l[lDestinationWorkloadNamespace])
	if info.MutualTLS {
		attrs = appendKnown(attrs, "dst.identity", l[lDestinationPrincipal])
	}
	return append(attrs, slog.String("direction", info.Reporter.direction()))
}

// podName is what the log calls the workload: the pod's name, falling back
// to the canonical service (ztunnel's choice).
func podName(w *state.Workload, canonical string) string {
	if w != nil && w.Name != "" {
		return w.Name
	}
	return canonical
}

func appendKnown(attrs []slog.Attr, key, v string) []slog.Attr {
	if v == "" || v == unknown {
		return attrs
	}
	return append(attrs, slog.String(key, v))
}

func appendAddr(attrs []slog.Attr, key string, a netip.AddrPort) []slog.Attr {
	if !a.IsValid() {
		return attrs
	}
	return append(attrs, slog.String(key, a.String()))
}

// millis is d in milliseconds, to the microsecond: most connections of a
// request/response workload last well under a millisecond.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
