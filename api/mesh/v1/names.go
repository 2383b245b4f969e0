package meshv1

import "strings"

// Name prefixes of Resource.Name: the kind of a resource is part of its
// name, so that a Service and a TrafficTarget with the same namespace/name
// are distinct resources of one set.
const (
	WorkloadPrefix = "workloads/"
	ServicePrefix  = "services/"
	PolicyPrefix   = "policies/"
	// SettingsName is the name of the one MeshSettings resource of a set.
	SettingsName = "settings"
)

// WorkloadName returns the resource name of the pod with the given UID.
func WorkloadName(uid string) string { return WorkloadPrefix + uid }

// ServiceName returns the resource name of a Service.
func ServiceName(namespace, name string) string {
	return ServicePrefix + namespace + "/" + name
}

// PolicyName returns the resource name of a compiled TrafficTarget.
func PolicyName(namespace, name string) string {
	return PolicyPrefix + namespace + "/" + name
}

// NameMatchesBody reports whether r's name has the prefix of its body's
// kind (and a non-empty rest), as the protocol requires; a resource without
// a body never matches.
func NameMatchesBody(r *Resource) bool {
	var prefix string
	switch r.GetBody().(type) {
	case *Resource_Workload:
		prefix = WorkloadPrefix
	case *Resource_Service:
		prefix = ServicePrefix
	case *Resource_Policy:
		prefix = PolicyPrefix
	case *Resource_Settings:
		return r.GetName() == SettingsName
	default:
		return false
	}
	rest, ok := strings.CutPrefix(r.GetName(), prefix)
	return ok && rest != ""
}
