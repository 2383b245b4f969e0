// Package splitv1alpha4 is the Go form of the SMI Traffic Split API,
// split.smi-spec.io/v1alpha4: the TrafficSplit, which shares the requests to
// a root Service between backend Services by weight, optionally only for
// requests that match HTTPRouteGroups (ARCHITECTURE.md §6; weft applies
// splits in the namespace's waypoint). Field names and JSON are upstream
// SMI's (github.com/servicemeshinterface/smi-spec,
// apis/traffic-split/v1alpha4), so manifests written for other SMI meshes
// apply unchanged; weft adds a status subresource, OpenAPI validation and
// printer columns. The CRD in install/helm/weft/crds is generated from this
// package by controller-gen (hack/codegen.sh); zz_generated.deepcopy.go
// likewise.
//
// Like every Kubernetes API type, the types here are plain data: safe for
// concurrent reads, not for concurrent writes. Objects from an informer cache
// are shared and must be copied (DeepCopy) before they are changed.
//
// This package holds API types only; it must never import a weft component,
// client-go or anything but k8s.io/apimachinery.
//
// +kubebuilder:object:generate=true
// +versionName=v1alpha4
// +groupName=split.smi-spec.io
package splitv1alpha4
