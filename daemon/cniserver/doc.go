// Package cniserver is the agent's side of the CNI protocol (api/cni/v1): it
// serves the unix socket that weft's chained CNI plugin calls on CNI ADD, DEL
// and CHECK, validates each request and hands it to an [Enroller], which does
// the actual enrollment.
//
// The package knows nothing of eBPF, netns or Kubernetes; it must not import
// client-go or other weft components.
package cniserver
