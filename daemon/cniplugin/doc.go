// Package cniplugin is weft's chained CNI plugin (cmd/weft-cni): on CNI ADD
// of a pod that belongs in the mesh it asks the node agent to enroll the pod
// (api/cni/v1 over the agent's unix socket) and lets the container runtime
// start the pod's containers only once the agent answers, so the pod's very
// first connection is already meshed.
//
// Whether a pod belongs in the mesh is read from the API server itself (with
// the plugin's own kubeconfig), never from a cache: the pod's namespace must
// carry weft.io/mesh=enabled, must not be excluded, and the pod must be
// neither opted out (weft.io/mesh=disabled) nor host-network.
//
// The plugin fails closed: if the agent or the API server cannot be reached,
// or the agent refuses, ADD fails with CNI error 11 (try again later) and the
// runtime retries; with failOpen the pod starts unmeshed instead. DEL never
// fails. The plugin passes the previous plugin's result through unchanged and
// never writes anything but the CNI result to stdout.
//
// The package must not import other weft components than api/.
package cniplugin
