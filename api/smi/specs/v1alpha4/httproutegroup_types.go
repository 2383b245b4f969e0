package specsv1alpha4

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HTTPRouteGroup describes HTTP/1 and HTTP/2 (gRPC) requests as named
// matches. It grants nothing by itself: a TrafficTarget rule allows some or
// all of its matches to some sources, and a TrafficSplit applies only to
// requests that match one of its groups. weft enforces HTTP matches in the
// destination namespace's waypoint only; without one, rules that name a
// group deny (fail closed).
//
// A match's name is its key: names are unique within a group, and
// TrafficTarget rules refer to them. Within a match, methods, pathRegex and
// every header must all match (AND); the matches of a group are ORed. An
// unset pathRegex or methods list matches every path or method.
//
// headers is a map from header name to a regular expression for its value,
// as in the SMI v1alpha4 specification. Some older SMI documents and the
// smi-sdk-go CRD write it as a list of one-entry maps; the schema rejects
// that form (naming spec.matches[i].headers) rather than guessing: merge the
// list into one map.
//
// The schema checks structure (unique names, known methods); weft-operator
// sets Accepted=False with reason InvalidMatch when a pathRegex or header
// value is not a valid RE2 regular expression, and TrafficTargets that use
// the group are then not accepted either.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=htr,categories=smi
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`,description="whether weft can enforce this group's matches"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,description="why it is (not) accepted"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,description="details of the Accepted condition"
type HTTPRouteGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec lists the group's matches.
	Spec HTTPRouteGroupSpec `json:"spec"`
	// Status is written by weft-operator.
	// +optional
	Status RouteStatus `json:"status,omitempty"`
}

// HTTPRouteGroupSpec is the specification of an HTTPRouteGroup.
type HTTPRouteGroupSpec struct {
	// Matches are the group's named HTTP matches.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	Matches []HTTPMatch `json:"matches"`
}

// HTTPMatch is one named HTTP request match.
type HTTPMatch struct {
	// Name identifies the match within its group; TrafficTarget rules list
	// it in their matches.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Methods the request may have; "*" is any. Unset matches every method.
	// +listType=set
	// +optional
	Methods []HTTPRouteMethod `json:"methods,omitempty"`

	// PathRegex is an RE2 regular expression the request path must match,
	// anchored at the start of the path. Unset matches every path.
	// +optional
	PathRegex string `json:"pathRegex,omitempty"`

	// Headers maps a header name to an RE2 regular expression its value must
	// match; every listed header must match.
	// +optional
	Headers map[string]string `json:"headers,omitempty"`
}

// HTTPRouteMethod is an HTTP method as defined in RFC 9110, or "*".
// +kubebuilder:validation:Enum="*";GET;HEAD;PUT;POST;DELETE;CONNECT;OPTIONS;TRACE;PATCH
type HTTPRouteMethod string

// The methods an HTTPMatch may name.
const (
	HTTPRouteMethodAll     HTTPRouteMethod = "*"
	HTTPRouteMethodGet     HTTPRouteMethod = "GET"
	HTTPRouteMethodHead    HTTPRouteMethod = "HEAD"
	HTTPRouteMethodPut     HTTPRouteMethod = "PUT"
	HTTPRouteMethodPost    HTTPRouteMethod = "POST"
	HTTPRouteMethodDelete  HTTPRouteMethod = "DELETE"
	HTTPRouteMethodConnect HTTPRouteMethod = "CONNECT"
	HTTPRouteMethodOptions HTTPRouteMethod = "OPTIONS"
	HTTPRouteMethodTrace   HTTPRouteMethod = "TRACE"
	HTTPRouteMethodPatch   HTTPRouteMethod = "PATCH"
)

// HTTPRouteGroupList is a list of HTTPRouteGroups.
//
// +kubebuilder:object:root=true
type HTTPRouteGroupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HTTPRouteGroup `json:"items"`
}

// RouteStatus is what weft-operator observed of a route object
// (HTTPRouteGroup or TCPRoute).
type RouteStatus struct {
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
}
