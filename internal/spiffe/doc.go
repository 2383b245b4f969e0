// Package spiffe is weft's workload identity: SPIFFE IDs of the form
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>
// (ARCHITECTURE.md §4), read from and verified in X.509 SVIDs.
//
// It is shared by ztunnel (mTLS on HBONE), the waypoint and the operator (the
// CA that signs these identities). It uses only the standard library and must
// never import a weft component.
package spiffe
