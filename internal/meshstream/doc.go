// Package meshstream implements both ends of the per-node configuration
// stream of api/mesh/v1 (ARCHITECTURE.md §5): the Server the operator runs,
// which diffs each node's desired resource set against what each of that
// node's streams has acknowledged and sends only the difference, and the
// Client that agents and ztunnels run, which resumes by stating the versions
// it holds, applies each response atomically, ACKs or NACKs it, and keeps
// its last applied set while the server is unreachable.
//
// The protocol's state machine is documented on the MeshConfig service in
// api/mesh/v1/mesh.proto. This package depends only on gRPC, protobuf and
// Prometheus; it must never import a weft component, client-go or tests/.
package meshstream
