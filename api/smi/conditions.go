package smi

// ConditionAccepted is the condition type weft-operator sets on every SMI
// object it reads. kubectl get shows its status and reason in the ACCEPTED
// and REASON columns.
const ConditionAccepted = "Accepted"

// Reasons of the Accepted condition. They are part of weft's API: users and
// scripts match on them, so a reason is never renamed.
const (
	// ReasonAccepted (Accepted=True): the object is valid, every object it
	// refers to exists, and weft enforces it as written.
	ReasonAccepted = "Accepted"

	// ReasonUnsupportedKind (Accepted=False): the object names a kind the
	// SMI specification defines but weft does not implement, such as a
	// TrafficTarget rule of kind UDPRoute or a TrafficSplit match with an API
	// group other than specs.smi-spec.io. Kinds the specification does not
	// define are rejected by the CRD schema instead.
	ReasonUnsupportedKind = "UnsupportedKind"

	// ReasonRouteGroupNotFound (Accepted=False): an HTTPRouteGroup named by a
	// TrafficTarget rule or a TrafficSplit match does not exist in the
	// object's namespace (route objects are looked up there, never
	// elsewhere).
	ReasonRouteGroupNotFound = "RouteGroupNotFound"

	// ReasonRouteNotFound (Accepted=False): a TCPRoute named by a
	// TrafficTarget rule does not exist in the TrafficTarget's namespace.
	ReasonRouteNotFound = "RouteNotFound"

	// ReasonMatchNotFound (Accepted=False): a rule's matches list names a
	// match its route object does not define.
	ReasonMatchNotFound = "MatchNotFound"

	// ReasonCrossNamespaceDestination (Accepted=False): a TrafficTarget's
	// destination names a namespace other than the TrafficTarget's own. Only
	// whoever may write policy in the destination's namespace may open
	// access to it, so such a target grants nothing.
	ReasonCrossNamespaceDestination = "CrossNamespaceDestination"

	// ReasonInvalidMatch (Accepted=False): a match cannot be enforced as
	// written, e.g. an HTTPRouteGroup's pathRegex or header value is not a
	// valid RE2 regular expression (the CRD schema cannot check that).
	ReasonInvalidMatch = "InvalidMatch"

	// ReasonServiceNotFound (Accepted=False): a TrafficSplit's root service
	// (spec.service) does not exist in its namespace. A backend Service that
	// does not exist yet is no reason to reject a split: SMI's rollout
	// workflow creates the split before the new backend's Service.
	ReasonServiceNotFound = "ServiceNotFound"

	// ReasonWaypointRequired (Accepted=False): the object needs HTTP-level
	// enforcement (an HTTPRouteGroup rule, a TrafficSplit) and the
	// destination's namespace has no waypoint. Until one runs, the HTTP-level
	// rules deny (fail closed) and splits are not applied.
	ReasonWaypointRequired = "WaypointRequired"
)
