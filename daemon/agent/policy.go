package agent

import (
	corev1 "k8s.io/api/core/v1"
)

// Labels users set.
const (
	// MeshLabel on a Namespace ("enabled") enrolls its pods; on a Pod
	// ("disabled") opts that pod out.
	MeshLabel    = "weft.io/mesh"
	MeshEnabled  = "enabled"
	MeshDisabled = "disabled"
)

// ProxyPorts are the node proxy's in-pod ports; a pod that listens on one
// itself cannot be meshed without breaking it.
var ProxyPorts = []uint16{15001, 15006, 15008}

// Decision is why a pod is or is not in the mesh.
type Decision struct {
	Mesh   bool
	Reason string
}

// decide is the pure enrollment policy (no I/O), so it is tested on its own.
func decide(ns *corev1.Namespace, pod *corev1.Pod, excluded map[string]bool) Decision {
	switch {
	case pod == nil:
		return Decision{Reason: "pod deleted"}
	case excluded[pod.Namespace]:
		return Decision{Reason: "namespace " + pod.Namespace + " is never meshed"}
	case pod.Spec.HostNetwork:
		return Decision{Reason: "host-network pod"}
	case pod.Labels[MeshLabel] == MeshDisabled:
		return Decision{Reason: "pod opted out (" + MeshLabel + "=" + MeshDisabled + ")"}
	case ns == nil || ns.Labels[MeshLabel] != MeshEnabled:
		return Decision{Reason: "namespace not enrolled"}
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return Decision{Reason: "pod finished"}
	}
	return Decision{Mesh: true, Reason: "namespace enrolled"}
}
