// Package ca is the operator's mesh certificate authority (ARCHITECTURE.md
// §4): it loads the root from the Secret weft-ca in the install namespace
// (weft's ca.crt/ca.key or cert-manager's tls.crt/tls.key/ca.crt), or
// generates one once and stores it there; keeps the trust bundle and the
// signer through root rotations (Authority: a new root is only signed with
// after every node acknowledged it); and serves the CSR gRPC service
// (Server, api/ca/v1) over TLS with a serving certificate of its own CA. The
// service accepts only the node proxy's pod-bound ServiceAccount token,
// verified by TokenReview, and signs an identity only for a node that runs
// a pod of it: the node comes from the token, never from the request.
//
// Signing itself is internal/pki's. The package must never import another
// component (ztunnel, daemon, l7proxy), bpf/, cilium/ebpf or tests/.
package ca
