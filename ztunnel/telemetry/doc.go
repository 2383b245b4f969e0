// Package telemetry is the node proxy's L4 telemetry (ARCHITECTURE.md §7):
// Istio's standard TCP metrics, with Istio's names and full label set so
// that Istio's dashboards work unchanged; weft's own connection counters;
// one access-log line per connection; and the admin HTTP server (:15020)
// that serves /metrics and /healthz/ready.
//
// The proxy calls Metrics.Open when it has decided where a connection goes,
// Conn.Sent and Conn.Received from its copy loops, and Conn.Close once;
// Metrics.Denied records a connection that policy refused and
// Metrics.Failed one that broke before it could be described. Label values
// are resolved once per connection, so byte accounting on the hot path is a
// single atomic add.
//
// Byte directions follow Istio's definitions, which are the same for both
// reporters: istio_tcp_received_bytes_total counts what the connection's
// client sent toward its server ("bytes received during request"), and
// istio_tcp_sent_bytes_total what went back to the client ("bytes sent
// during response"). Istio's ztunnel counts exactly this (downstream to
// upstream is "received"), which reads backwards for reporter="source"
// (istio/istio#32399); the access log, like ztunnel's, reports bytes_sent and
// bytes_recv from the local workload's point of view instead.
//
// telemetry must never import another weft component beyond the types of
// ztunnel/state and internal/spiffe, nor the proxy packages that use it, nor
// client-go. It opens no socket of its own: ServeAdmin serves on a listener
// its caller made.
package telemetry
