package splitv1alpha4

import (
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficSplit shares the requests that clients send to a root Service
// (spec.service) between backend Services in proportion to their weights —
// a canary — optionally only for requests that match one of the
// HTTPRouteGroups in spec.matches (an A/B test; other requests go to the
// root Service as usual). Weights are relative, not percentages: 1000 and
// 500 send a third to the second backend. A weight of 0 keeps a backend
// listed without traffic, as SMI's rollout workflow does before the new
// backend's Service exists.
//
// The schema rejects a missing service or backends, a negative weight, the
// same backend twice and a match kind other than HTTPRouteGroup.
// weft-operator sets Accepted=False when the root Service does not exist
// (ServiceNotFound), a match names a group that does not exist
// (RouteGroupNotFound) or an API group other than specs.smi-spec.io
// (UnsupportedKind), or the namespace has no waypoint to apply the split
// (WaypointRequired); a split that is not accepted changes nothing, traffic
// keeps going to the root Service.
//
// weft-operator writes status (observedGeneration, the Accepted condition,
// backendsSummary) through the status subresource only.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=ts,categories=smi
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`,description="root Service whose traffic is split"
// +kubebuilder:printcolumn:name="Backends",type=string,JSONPath=`.status.backendsSummary`,description="backend Services and their weights"
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`,description="whether weft applies this split"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,description="why it is (not) accepted"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,description="details of the Accepted condition"
type TrafficSplit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec names the root Service and its backends.
	Spec TrafficSplitSpec `json:"spec"`
	// Status is written by weft-operator.
	// +optional
	Status TrafficSplitStatus `json:"status,omitempty"`
}

// TrafficSplitSpec is the specification of a TrafficSplit.
type TrafficSplitSpec struct {
	// Service is the root Service, in the TrafficSplit's namespace, that
	// clients connect to.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service"`

	// Backends are the Services that receive the root Service's traffic.
	// +listType=map
	// +listMapKey=service
	// +kubebuilder:validation:MinItems=1
	Backends []TrafficSplitBackend `json:"backends"`

	// Matches restricts the split to requests that match one of these
	// HTTPRouteGroups (in this namespace); unset splits every request.
	// +optional
	Matches []TrafficSplitMatch `json:"matches,omitempty"`
}

// TrafficSplitBackend is one backend Service and its weight.
type TrafficSplitBackend struct {
	// Service is the name of a Service in the TrafficSplit's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service"`

	// Weight is the backend's share relative to the other backends' weights;
	// a whole number, 0 or more.
	// +kubebuilder:validation:Minimum=0
	Weight int32 `json:"weight"`
}

// MatchKind is the kind of object a TrafficSplit match names.
// +kubebuilder:validation:Enum=HTTPRouteGroup
type MatchKind string

// KindHTTPRouteGroup is the only kind a TrafficSplit match may name.
const KindHTTPRouteGroup MatchKind = "HTTPRouteGroup"

// TrafficSplitMatch names an HTTPRouteGroup in the TrafficSplit's namespace.
// Its shape is Kubernetes' TypedLocalObjectReference, as upstream SMI's.
type TrafficSplitMatch struct {
	// APIGroup of the object; unset or specs.smi-spec.io.
	// +optional
	APIGroup *string `json:"apiGroup,omitempty"`

	// Kind of the object: HTTPRouteGroup.
	Kind MatchKind `json:"kind"`

	// Name of the HTTPRouteGroup.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// TrafficSplitStatus is what weft-operator observed of a TrafficSplit.
type TrafficSplitStatus struct {
	// ObservedGeneration is the metadata.generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: weft sets one, of type Accepted.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// BackendsSummary lists the backends as service:weight for kubectl get
	// (a printer column can show only the first element of a list). For
	// display only: programs read spec.backends.
	// +optional
	BackendsSummary string `json:"backendsSummary,omitempty"`
}

// TrafficSplitList is a list of TrafficSplits.
//
// +kubebuilder:object:root=true
type TrafficSplitList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficSplit `json:"items"`
}

// maxSummaryBackends bounds status.backendsSummary so that kubectl get stays
// one readable line.
const maxSummaryBackends = 4

// BackendsSummary is the value weft-operator writes to
// status.backendsSummary: the backends as service:weight, comma-separated
// without spaces, at most four of them followed by "+N" for the rest.
// kubectl get shows it in the BACKENDS column.
func (s *TrafficSplit) BackendsSummary() string {
	var b strings.Builder
	for i, be := range s.Spec.Backends {
		if i == maxSummaryBackends {
			b.WriteString(",+")
			b.WriteString(strconv.Itoa(len(s.Spec.Backends) - i))
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(be.Service)
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(int64(be.Weight), 10))
	}
	return b.String()
}
