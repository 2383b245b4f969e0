// Package state is the node proxy's view of the mesh: workloads, services
// with their endpoints, compiled authorization policy and the trust bundle,
// as immutable versioned Snapshots (types.go), plus the pure decisions made
// over them — where an outbound connection goes (Resolve), which endpoint a
// Service connection uses (Balancer), and whether an inbound connection is
// allowed (Authorize). It does no network I/O of its own.
//
// Snapshots come from a JSON file (Store.WatchFile) until the operator's
// per-node stream exists; a file that does not parse or validate never
// replaces the last good snapshot.
//
// state must never import another weft component, client-go, or anything
// that does I/O on the network.
package state
