// Package server wires weft-operator together: the Kubernetes clients
// (in-cluster or a kubeconfig), the mesh CA (operator/ca: the weft-ca
// Secret, the CSR service), the controllers (operator/controller: the
// compiled config, the published trust bundle) and the per-node config
// stream (internal/meshstream), behind one TLS gRPC port
// whose serving certificate the mesh CA issues, plus an HTTP port with
// /metrics, /healthz and /readyz. It authenticates config streams with the
// caller's pod-bound ServiceAccount token (TokenReview; the node proxy's
// and the agent's ServiceAccounts only; the node from the token), and
// switches the CA to a new root once every connected node acknowledged a
// set that trusts it.
//
// The operator runs as one replica and has no leader election: while it is
// down nodes keep serving their last configuration and certificates, and a
// restarted operator resyncs them.
//
// The package must never import another component (daemon, ztunnel,
// l7proxy), bpf/, cilium/ebpf or tests/.
package server
