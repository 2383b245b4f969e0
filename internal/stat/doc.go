// Package stat is `weft stat`: per-workload golden signals over a window,
// computed from the nodes' own metrics without a Prometheus server, like
// `linkerd viz stat`. It scrapes every node's ztunnel (:15020/metrics, Istio's
// metric names and labels) twice, a window apart, and turns the counters'
// differences into rates: TCP connections opened per second, active
// connections, bytes per second each way and the share of connections
// refused or reset; and, from waypoints' istio_requests_total and
// istio_request_duration_milliseconds when present, requests per second,
// success rate and latency percentiles.
//
// stat must never import a weft component (daemon, ztunnel, l7proxy,
// operator) or tests/.
package stat
