// Package accessv1alpha3 is the Go form of the SMI Traffic Access Control API,
// access.smi-spec.io/v1alpha3: the TrafficTarget, which allows a list of
// source identities to reach a destination identity on the routes its rules
// name (ARCHITECTURE.md §6). Field names and JSON are upstream SMI's
// (github.com/servicemeshinterface/smi-spec, apis/traffic-access), so
// manifests written for other SMI meshes apply unchanged; weft adds a status
// subresource, OpenAPI validation and printer columns. The CRD in
// install/helm/weft/crds is generated from this package by controller-gen
// (hack/codegen.sh); zz_generated.deepcopy.go likewise.
//
// Like every Kubernetes API type, the types here are plain data: safe for
// concurrent reads, not for concurrent writes. Objects from an informer cache
// are shared and must be copied (DeepCopy) before they are changed.
//
// This package holds API types only; it must never import a weft component,
// client-go or anything but k8s.io/apimachinery.
//
// +kubebuilder:object:generate=true
// +versionName=v1alpha3
// +groupName=access.smi-spec.io
package accessv1alpha3
