// Package controller turns the cluster into the mesh's configuration: it
// watches Namespaces, Pods, Services, EndpointSlices, ReplicaSets, Nodes and
// the SMI TrafficTarget, TCPRoute and HTTPRouteGroup resources, and on any
// change recompiles the whole resource set (operator/compile) and hands it
// to the config stream (internal/meshstream) for every Node of the cluster.
// It also writes each TrafficTarget's status (the Accepted condition,
// observedGeneration, sourcesSummary), and only when it changes. A second
// controller, TrustBundlePublisher, keeps the mesh trust bundle in a
// ConfigMap of every enrolled namespace.
//
// The compiled set is one whole (policies refer to workloads, services to
// endpoints), so there is one coalescing work item, "recompile", rather
// than a reconcile per object: a burst of changes costs one compile, and a
// lone change is compiled at once.
//
// The package must never import another component (daemon, ztunnel,
// l7proxy), bpf/, cilium/ebpf or tests/.
package controller
