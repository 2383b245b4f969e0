// Package pki is weft's certificate authority logic: it loads a CA
// certificate and key (weft's own ca.crt/ca.key, or cert-manager's
// tls.crt/tls.key/ca.crt), generates a root, builds CSRs, and signs workload
// X.509 SVIDs from CSRs under the rules of ARCHITECTURE.md §4 (exactly one
// SPIFFE URI SAN, never a CA, never anything the CSR asks for beyond its
// public key and that identity).
//
// The operator's CSR service and ztunnel's file-based interim CA both sign
// through it, so the two cannot drift. It uses only the standard library and
// internal/spiffe, does no network I/O, and must never import a weft
// component.
package pki
