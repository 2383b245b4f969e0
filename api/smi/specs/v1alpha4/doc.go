// Package specsv1alpha4 is the Go form of the SMI Traffic Specs API,
// specs.smi-spec.io/v1alpha4: HTTPRouteGroup (HTTP matches by method, path
// and headers) and TCPRoute (TCP ports), the route objects that
// TrafficTarget rules and TrafficSplit matches name (ARCHITECTURE.md §6).
// Field names and JSON are upstream SMI's
// (github.com/servicemeshinterface/smi-spec, apis/traffic-specs/v1alpha4),
// so manifests written for other SMI meshes apply unchanged; weft adds a
// status subresource, OpenAPI validation and printer columns. The CRDs in
// install/helm/weft/crds are generated from this package by controller-gen
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
// +versionName=v1alpha4
// +groupName=specs.smi-spec.io
package specsv1alpha4
