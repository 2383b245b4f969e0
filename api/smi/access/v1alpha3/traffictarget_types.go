package accessv1alpha3

import (
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficTarget allows the pods of its source ServiceAccounts to connect to
// the pods of its destination ServiceAccount, on the routes its rules name.
// Rules and sources are ORed, TrafficTargets are additive, and a rule
// without matches covers every match of its route object. Route objects are
// looked up in the TrafficTarget's namespace.
//
// Validation is split between the API server and weft-operator, so that a
// TrafficTarget is never half-applied:
//
//   - The CRD schema rejects what no SMI mesh could accept: a missing
//     destination, sources or rules, an empty name, a subject kind other than
//     ServiceAccount, a rule kind the SMI specification does not define (a
//     typo such as "HTTPRoute" fails at kubectl apply, naming the field and
//     the valid kinds), a port outside 1–65535, a port on a source.
//   - weft-operator marks Accepted=False, and the target then allows nothing,
//     when the object is valid SMI that weft cannot enforce as written: a rule
//     kind weft does not implement (UDPRoute, reason UnsupportedKind: SMI
//     manifests written for other meshes still apply, and kubectl get shows
//     why they grant nothing), a route object or match that does not exist
//     (RouteGroupNotFound, RouteNotFound, MatchNotFound), a destination in
//     another namespace (CrossNamespaceDestination), or HTTP-level rules
//     without a waypoint (WaypointRequired).
//
// weft-operator writes status (observedGeneration, the Accepted condition,
// sourcesSummary) through the status subresource only.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=tt,categories=smi
// +kubebuilder:printcolumn:name="Destination",type=string,JSONPath=`.spec.destination.name`,description="ServiceAccount the sources may reach"
// +kubebuilder:printcolumn:name="Sources",type=string,JSONPath=`.status.sourcesSummary`,description="namespace/name of every source ServiceAccount"
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`,description="whether weft enforces this TrafficTarget"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,description="why it is (not) accepted"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,description="details of the Accepted condition"
type TrafficTarget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says who may reach whom, on which routes.
	Spec TrafficTargetSpec `json:"spec"`
	// Status is written by weft-operator.
	// +optional
	Status TrafficTargetStatus `json:"status,omitempty"`
}

// TrafficTargetSpec is the specification of a TrafficTarget.
type TrafficTargetSpec struct {
	// Destination is the ServiceAccount whose pods accept the traffic.
	Destination IdentityBindingSubject `json:"destination"`

	// Sources are the ServiceAccounts whose pods may connect. A source's
	// namespace defaults to the TrafficTarget's.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:XValidation:rule="self.all(s, !has(s.port))",message="port applies to the destination only"
	Sources []IdentityBindingSubject `json:"sources"`

	// Rules are the routes the sources may use: TCPRoute (ports) and
	// HTTPRouteGroup (HTTP matches) objects in this namespace.
	// +kubebuilder:validation:MinItems=1
	Rules []TrafficTargetRule `json:"rules"`
}

// SubjectKind is the kind of an identity. SMI defines only ServiceAccount.
// +kubebuilder:validation:Enum=ServiceAccount
type SubjectKind string

// KindServiceAccount is the only identity kind: a Kubernetes ServiceAccount,
// whose SPIFFE ID is spiffe://<trust-domain>/ns/<namespace>/sa/<name>.
const KindServiceAccount SubjectKind = "ServiceAccount"

// IdentityBindingSubject names an identity.
type IdentityBindingSubject struct {
	// Kind of the identity; only ServiceAccount.
	Kind SubjectKind `json:"kind"`

	// Name of the ServiceAccount.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Namespace of the ServiceAccount; defaults to the TrafficTarget's. A
	// destination must be in the TrafficTarget's own namespace.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// Port restricts a destination to one TCP port of its pods; unset means
	// the ports the rules allow. Sources have no port.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port *int32 `json:"port,omitempty"`
}

// RuleKind is the kind of route object a rule names.
// +kubebuilder:validation:Enum=HTTPRouteGroup;TCPRoute;UDPRoute
type RuleKind string

// The rule kinds of SMI. The schema accepts all three so that SMI manifests
// apply unchanged; weft implements HTTPRouteGroup and TCPRoute and marks a
// TrafficTarget with a UDPRoute rule Accepted=False (UnsupportedKind).
const (
	KindHTTPRouteGroup RuleKind = "HTTPRouteGroup"
	KindTCPRoute       RuleKind = "TCPRoute"
	KindUDPRoute       RuleKind = "UDPRoute"
)

// TrafficTargetRule names a route object (specs.smi-spec.io) and,
// optionally, which of its matches the sources may use.
type TrafficTargetRule struct {
	// Kind of the route object: HTTPRouteGroup or TCPRoute (UDPRoute is SMI
	// but not implemented by weft: the TrafficTarget is not accepted).
	Kind RuleKind `json:"kind"`

	// Name of the route object, in the TrafficTarget's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Matches names the route object's matches that are allowed; empty or
	// unset allows all of them.
	// +listType=set
	// +kubebuilder:validation:items:MinLength=1
	// +optional
	Matches []string `json:"matches,omitempty"`
}

// TrafficTargetStatus is what weft-operator observed of a TrafficTarget.
type TrafficTargetStatus struct {
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

	// SourcesSummary lists the sources as namespace/name for kubectl get (a
	// printer column can show only the first element of a list). For
	// display only: programs read spec.sources.
	// +optional
	SourcesSummary string `json:"sourcesSummary,omitempty"`
}

// TrafficTargetList is a list of TrafficTargets.
//
// +kubebuilder:object:root=true
type TrafficTargetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficTarget `json:"items"`
}

// maxSummarySources bounds status.sourcesSummary so that kubectl get stays
// one readable line even for targets with many sources.
const maxSummarySources = 4

// SourcesSummary is the value weft-operator writes to
// status.sourcesSummary: the sources as namespace/name (the namespace
// defaulted to the TrafficTarget's), comma-separated without spaces, at most
// four of them followed by "+N" for the rest. kubectl get shows it in the
// SOURCES column.
func (t *TrafficTarget) SourcesSummary() string {
	var b strings.Builder
	for i, s := range t.Spec.Sources {
		if i == maxSummarySources {
			b.WriteString(",+")
			b.WriteString(strconv.Itoa(len(t.Spec.Sources) - i))
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		ns := s.Namespace
		if ns == "" {
			ns = t.Namespace
		}
		b.WriteString(ns)
		b.WriteByte('/')
		b.WriteString(s.Name)
	}
	return b.String()
}
