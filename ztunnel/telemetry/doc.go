// Package telemetry is the node proxy's L4 telemetry (ARCHITECTURE.md §7):
// Istio's standard TCP metrics, with Istio's names and full label set so
// that Istio's dashboards work unchanged; weft's own connection counters;
// one access-log line per connection; the Hubble flow records of each
// connection (api/flows/v1) for the node's flow server, handed to a
// FlowSink; the workload certificates' expiry gauge; and the admin HTTP
// server (:15020) that serves /metrics and /healthz/ready.
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
// Flow records follow api/flows/v1 and ARCHITECTURE.md §7: the source
// node's proxy reports EGRESS, the destination's INGRESS; an open is
// FORWARDED with SYN, a close FORWARDED with FIN (RST, with the error as
// reason, when an error, a policy change or the proxy's shutdown ended
// it), a denial DROPPED with POLICY_DENIED and the deciding TrafficTarget.
// The mesh state carries no pod labels, so endpoints are labelled with the
// app and version labels, the namespace and the ServiceAccount only.
//
// telemetry must never import another weft component beyond the types of
// ztunnel/state, internal/spiffe and internal/flowid, nor the proxy packages
// that use it, nor client-go. It opens no socket of its own: ServeAdmin serves on a listener
// its caller made.
package telemetry
