// Package status is `weft status`: the health of a weft installation as
// the API server and the components' own endpoints report it — the
// operator (its Deployment, its /readyz), and on every node the weft-agent
// (pod ready, :15021/healthz) and weft-ztunnel (pod ready,
// :15020/healthz/ready), the pods enrolled in the mesh, the workload
// certificate's expiry and the mesh config version each ztunnel serves
// (all nodes must serve the same). A Report lists every problem by name, so
// the command can exit non-zero naming what is unhealthy.
//
// status must never import a weft component (daemon, ztunnel, l7proxy,
// operator) or tests/.
package status
