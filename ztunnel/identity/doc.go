// Package identity is the node proxy's certificate manager: it holds one
// X.509 SVID per ServiceAccount of the node's enrolled pods, generating each
// key on the node and sending only a CSR to a Signer (ARCHITECTURE.md §4:
// keys never leave the node), renews every certificate at half its lifetime
// without touching open connections, keeps the trust bundle, and builds the
// TLS 1.3 configurations of HBONE (§3.2) that present those certificates and
// verify peers' SPIFFE identities.
//
// The Signer is the file-based interim CA (FileSigner, the Secret weft-ca
// mounted into ztunnel) until the operator's CSR service exists.
//
// identity must never import another weft component, client-go, or the
// operator's code: the operator's gRPC client will satisfy Signer from the
// outside.
package identity
