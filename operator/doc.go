// Package operator will be weft's control plane (weft-operator): the mesh CA
// with node-bound identities, the SMI controllers and the per-node config
// stream (issue 5). Not built yet.
package operator
