package specsv1alpha4

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TCPRoute describes TCP connections by destination port. It grants nothing
// by itself: a TrafficTarget rule allows its ports to some sources. ports
// unset or [] covers every port of the destination, as the SMI specification
// says; the PORTS column of kubectl get then shows nothing or [].
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=tr,categories=smi
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.spec.matches.ports`,description="destination ports; empty means every port"
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`,description="whether weft can enforce this route"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,description="why it is (not) accepted"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,description="details of the Accepted condition"
type TCPRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec holds the route's match.
	Spec TCPRouteSpec `json:"spec"`
	// Status is written by weft-operator.
	// +optional
	Status RouteStatus `json:"status,omitempty"`
}

// TCPRouteSpec is the specification of a TCPRoute.
type TCPRouteSpec struct {
	// Matches is the route's single match (an object, not a list, in SMI).
	Matches TCPMatch `json:"matches"`
}

// TCPMatch selects TCP connections by destination port.
type TCPMatch struct {
	// Name of the match, for TrafficTarget rules that list matches.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Name string `json:"name,omitempty"`

	// Ports are destination ports; unset or empty means every port.
	// +listType=set
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	// +optional
	Ports []int32 `json:"ports,omitempty"`
}

// TCPRouteList is a list of TCPRoutes.
//
// +kubebuilder:object:root=true
type TCPRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TCPRoute `json:"items"`
}
