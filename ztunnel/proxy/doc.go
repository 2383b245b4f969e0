// Package proxy is the node proxy's connection handling: for every pod the
// in-pod manager (ztunnel/inpod) serves, it carries the pod's outbound
// connections to their destination — over HBONE mTLS to a meshed workload
// (after picking a Service endpoint), as plain TCP to anything else — and
// terminates inbound HBONE and plaintext connections after authorizing them
// against the compiled policy (ARCHITECTURE.md §3, §6). A policy change that
// denies an open inbound connection closes it.
//
// Routing and authorization are pure decisions of ztunnel/state; identities
// and TLS configurations come from ztunnel/identity; the tunnel protocol is
// internal/hbone; metrics and the access log are ztunnel/telemetry. proxy
// must never import client-go, another weft component or tests/.
package proxy
