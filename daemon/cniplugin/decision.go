package cniplugin

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The mesh label, on namespaces (enabled) and pods (disabled opts out).
const (
	LabelMesh     = "weft.io/mesh"
	MeshEnabled   = "enabled"
	MeshDisabled  = "disabled"
	argNamespace  = "K8S_POD_NAMESPACE"
	argName       = "K8S_POD_NAME"
	argUID        = "K8S_POD_UID"
	argsSeparator = ";"
)

// Decision is whether a pod is to be enrolled, and why.
type Decision struct {
	Enroll bool
	Reason string
}

// NamespaceEnrolled reports whether pods of ns belong in the mesh, as far as
// the namespace decides; excluded namespaces never do.
func NamespaceEnrolled(cfg *Config, ns *corev1.Namespace) Decision {
	switch {
	case cfg.Excluded(ns.Name):
		return Decision{Reason: "namespace " + ns.Name + " is excluded"}
	case ns.Labels[LabelMesh] != MeshEnabled:
		return Decision{Reason: fmt.Sprintf("namespace %s is not labelled %s=%s", ns.Name, LabelMesh, MeshEnabled)}
	}
	return Decision{Enroll: true, Reason: fmt.Sprintf("namespace %s is labelled %s=%s", ns.Name, LabelMesh, MeshEnabled)}
}

// Decide reports whether pod (of namespace ns) is to be enrolled.
func Decide(cfg *Config, ns *corev1.Namespace, pod *corev1.Pod) Decision {
	if d := NamespaceEnrolled(cfg, ns); !d.Enroll {
		return d
	}
	switch {
	case pod.Spec.HostNetwork:
		return Decision{Reason: "pod uses the host network"}
	case pod.Labels[LabelMesh] == MeshDisabled:
		return Decision{Reason: fmt.Sprintf("pod is labelled %s=%s", LabelMesh, MeshDisabled)}
	}
	return Decision{Enroll: true, Reason: fmt.Sprintf("namespace %s is labelled %s=%s", ns.Name, LabelMesh, MeshEnabled)}
}

// podRef is the pod a CNI command is for, from CNI_ARGS.
type podRef struct {
	Namespace, Name, UID string
}

func (p podRef) String() string { return p.Namespace + "/" + p.Name }

// errMalformedArgs is wrapped by parseArgs errors.
var errMalformedArgs = errors.New("malformed CNI_ARGS")

// parseArgs reads the Kubernetes pod from CNI_ARGS ("K=V;K=V"). ok is false
// when the args name no pod (the container is not a Kubernetes pod). Keys
// other than K8S_POD_* are ignored.
func parseArgs(args string) (ref podRef, ok bool, err error) {
	if args == "" {
		return podRef{}, false, nil
	}
	for _, kv := range strings.Split(args, argsSeparator) {
		if kv == "" {
			continue
		}
		k, v, found := strings.Cut(kv, "=")
		if !found {
			return podRef{}, false, fmt.Errorf("%w: %q is not KEY=VALUE", errMalformedArgs, kv)
		}
		switch k {
		case argNamespace:
			ref.Namespace = v
		case argName:
			ref.Name = v
		case argUID:
			ref.UID = v
		}
	}
	if ref.Namespace == "" && ref.Name == "" {
		return podRef{}, false, nil
	}
	if ref.Namespace == "" || ref.Name == "" {
		return podRef{}, false, fmt.Errorf("%w: %s and %s must both be set (got %q)", errMalformedArgs, argNamespace, argName, args)
	}
	return ref, true, nil
}
