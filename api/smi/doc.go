// Package smi holds what weft's three SMI API packages share: the condition
// type and reasons that weft-operator sets on TrafficTarget, HTTPRouteGroup,
// TCPRoute and TrafficSplit objects, so that users, the CLI and tests read
// one vocabulary. The Go types of the resources live in the versioned
// packages below it: access/v1alpha3 (TrafficTarget), specs/v1alpha4
// (HTTPRouteGroup, TCPRoute) and split/v1alpha4 (TrafficSplit), whose
// CustomResourceDefinitions controller-gen generates into
// install/helm/weft/crds (see hack/codegen.sh).
//
// # Conditions
//
// Every SMI object weft reads gets exactly one condition of type
// [ConditionAccepted] in status.conditions, set with
// k8s.io/apimachinery/pkg/api/meta.SetStatusCondition (which keeps
// LastTransitionTime unless the status flips) together with
// status.observedGeneration. Accepted=True means weft enforces the object as
// written; Accepted=False means weft enforces none of it — a TrafficTarget
// that is not accepted allows nothing, it is never half-applied
// (ARCHITECTURE.md §6) — and the reason says why.
//
// This package holds constants only; it must never import a weft component
// or client-go.
package smi
