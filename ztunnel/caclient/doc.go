// Package caclient is the node proxy's client of the operator's CSR service
// (api/ca/v1): an identity.Signer that sends a workload's CSR over TLS 1.3,
// verifying the operator's serving certificate against the mesh trust
// bundle and its Service DNS name, authenticated by the proxy's pod-bound
// projected ServiceAccount token (read fresh for every call, since the
// kubelet rotates it), and that maps the service's status codes to Go
// errors a log reader understands. It is also an identity.RootSource with
// the trust bundle of the latest answer.
//
// ztunnel must not link client-go (cmd/weft-ztunnel/deps_test.go): this
// package must never import client-go, the operator's code, another weft
// component or tests/; it needs only gRPC, api/ca/v1 and internal/spiffe.
package caclient
