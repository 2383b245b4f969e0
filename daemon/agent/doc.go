// Package agent is weft-agent's control loop: it watches the Namespaces of
// the cluster and the Pods of its own node, decides which pods are in the
// mesh (namespace label weft.io/mesh=enabled, minus opt-outs and pods that
// must never be meshed), and enrolls or releases each one: the node proxy
// first gets the pod's netns (so its listeners exist before any packet is
// redirected), then the datapath starts redirecting; release runs in the
// opposite order. Enrollment and release are idempotent, so the agent
// reconciles from the pinned datapath and the API after a restart.
//
// It must not import the other components (ztunnel, operator, l7proxy).
package agent
