// Package preflight checks whether a node's kernel and host can run weft's
// datapath (ARCHITECTURE.md §3.1): kernel version, BTF, the cgroup v2 mount,
// a bpffs at the pin root, the eBPF program types, attach types and helpers
// the programs use, tcx, loading the real redirect collection, privileges,
// and, with cluster access, NetworkPolicies that would block HBONE. It backs
// `weft check`.
//
// The decisions are pure functions over measured inputs (a kernel release
// string, mountinfo text, a capability mask, a statfs magic, NetworkPolicy
// objects), tested without a kernel; the probes that gather those inputs
// live in the _linux.go files. It must never import a weft component
// (daemon, ztunnel, l7proxy, operator) or tests/.
package preflight
