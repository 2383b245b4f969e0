// Package cav1 is version 1 of weft's certificate service: the protobuf
// messages and gRPC service (ca.proto) by which a node proxy sends the
// operator a CSR for a workload identity and gets back its certificate chain
// and the mesh trust bundle (ARCHITECTURE.md §4). Transport, token
// authentication, node-bound authorization and error codes are documented
// on the Certificates service in ca.proto; operator/ca serves it and
// ztunnel/caclient calls it.
//
// ca.pb.go and ca_grpc.pb.go are generated from ca.proto (make generate).
// The package imports only protobuf and gRPC and must never import a weft
// component, client-go or tests/.
package cav1
