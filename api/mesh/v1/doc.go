// Package meshv1 is version 1 of weft's per-node configuration stream: the
// protobuf messages and gRPC service (mesh.proto) by which the operator
// streams each node's workloads, services, compiled policies and mesh
// settings, as versioned resources with delta updates, to that node's agent
// and ztunnel (ARCHITECTURE.md §5). The protocol's state machine is
// documented on the MeshConfig service in mesh.proto; internal/meshstream
// implements both ends.
//
// mesh.pb.go and mesh_grpc.pb.go are generated from mesh.proto (make
// generate). The package imports only protobuf and gRPC and must never
// import a weft component or tests/.
package meshv1
