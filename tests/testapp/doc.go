// Package testapp implements weft-testapp, the workload that weft's
// end-to-end tests run inside the emulated pods of the local cluster.
//
// It has one job: be a small, predictable peer for the mesh under test. It
// provides an HTTP echo server (HTTP/1.1, cleartext HTTP/2 and TLS with
// ALPN), a TCP echo server, one-shot HTTP and TCP clients that summarise
// what they saw as JSON, a fixed-rate load generator, an in-cluster
// Kubernetes API permission checker, and a process that only sleeps.
// Command weft-testapp (tests/cmd/weft-testapp) maps its flags onto the
// functions here.
//
// The package treats weft as a black box: it must never import weft's own
// packages (daemon, ztunnel, operator, bpf, internal), so that the tests see
// only what a real workload would see. Its listeners and dialers disable
// Multipath TCP, which Go enables by default on listeners but the mesh's
// eBPF programs do not handle.
package testapp
