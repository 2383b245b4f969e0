// Package cluster runs weft's local Kubernetes cluster on one machine: a real
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler in a network
// namespace of their own, and N nodes as network namespaces joined by an
// underlay bridge, each with kube-proxy and a node emulator (package
// tests/kubelet) that runs pods as processes in pod network namespaces wired by
// the real CNI plugins.
//
// Every resource a cluster creates (network namespaces, the host veth, cgroups,
// bpffs pin roots, processes) is named after the cluster's run ID and recorded
// under its run directory, which the owning process holds locked. Stop removes
// all of it; Reap removes what a killed owner left behind, and only when its
// owner is dead. Nothing outside loopback and the cluster's own address range
// (ARCHITECTURE.md §8) is ever addressed.
//
// The package is for tests and developer tooling; it must not be imported by
// weft's components.
package cluster
