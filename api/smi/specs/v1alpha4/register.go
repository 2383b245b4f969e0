package specsv1alpha4

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of this package's resources.
const GroupName = "specs.smi-spec.io"

// SchemeGroupVersion is the group and version of this package's resources.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha4"}

var (
	// SchemeBuilder registers this package's types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds HTTPRouteGroup, TCPRoute and their lists to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource qualifies a resource name (e.g. "tcproutes") with this package's
// group.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&HTTPRouteGroup{}, &HTTPRouteGroupList{},
		&TCPRoute{}, &TCPRouteList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
