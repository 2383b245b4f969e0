// Package compile turns cluster state (pods, Services, EndpointSlices,
// namespaces, SMI objects) and the mesh settings into the resource set of
// the per-node configuration stream (api/mesh/v1): one Workload per pod,
// one Service per ClusterIP Service, one Policy per SMI TrafficTarget and
// the MeshSettings, each with a content-derived version, plus the Accepted
// condition every TrafficTarget should carry (ARCHITECTURE.md §3.3, §5,
// §6). It is a pure function over its inputs: no I/O, no clock, no
// goroutines, no logging; the same inputs, in any order, give the same
// output. Compile builds everything; a Compiler, fed the informers' objects
// on every change, rebuilds only the resources whose objects changed.
//
// Every node receives the same set. A node proxy connects its pods to any
// pod or Service of the cluster, so it needs every destination's identity
// (to verify the server's SPIFFE ID and to choose HBONE or plain TCP) and
// every Service's endpoints (it load-balances at the source); it enforces
// policy for its own pods only, but sending every node every policy keeps a
// pod's move between nodes from changing any node's policy set, and lets
// the stream server share one compiled resource, and its version, across
// all nodes.
//
// The result must never be refused by a node: a node that refuses a set
// keeps serving its old one, so one bad object would freeze the whole
// mesh. Compile therefore drops or repairs what a node proxy's validation
// (ztunnel/state.Snapshot.Validate) rejects instead of passing it on — an
// address claimed twice goes to its newest claimant, an invalid address is
// skipped — and compiles a TrafficTarget it cannot enforce as written into
// a Policy that selects its destination and allows nothing (fail closed).
//
// TrafficSplit compiles to nothing yet: splits are applied by waypoints,
// which a later issue adds. For the same reason HTTPRouteGroup rules
// compile to rules that deny at L4, and their TrafficTargets are not
// Accepted (reason WaypointRequired).
//
// The package imports only the standard library, protobuf, api/,
// internal/spiffe and the Kubernetes API types (k8s.io/api,
// k8s.io/apimachinery), as imports_test.go checks; it must never import
// client-go (the caller owns the informers), another operator package,
// another component (ztunnel, daemon, l7proxy), bpf/ or tests/.
package compile
