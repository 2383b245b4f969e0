// Package meshclient feeds the node proxy's mesh state from the operator's
// per-node config stream (api/mesh/v1, internal/meshstream): each applied
// update becomes one validated state.Snapshot published to the state.Store;
// a set that does not convert or validate is NACKed and the proxy keeps
// serving its last good snapshot. It must never import client-go or another
// weft component.
package meshclient
