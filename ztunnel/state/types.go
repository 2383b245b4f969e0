package state

import "net/netip"

// Protocol values of Workload.Protocol.
const (
	// ProtocolHBONE marks a meshed workload: reach it over HBONE on
	// HBONEPort of its IP.
	ProtocolHBONE = "HBONE"
	// ProtocolTCP marks a known workload outside the mesh: plain TCP.
	ProtocolTCP = "TCP"
)

// Rule kinds of Rule.Kind that Authorize knows; a rule of another kind
// allows nothing.
const (
	KindTCPRoute       = "TCPRoute"
	KindHTTPRouteGroup = "HTTPRouteGroup"
)

// Policy modes (Helm value policy.mode, ARCHITECTURE.md §6).
const (
	ModePermissive = "permissive"
	ModeStrict     = "strict"
)

// HBONEPort is the port of every meshed pod's HBONE listener.
const HBONEPort = 15008

// Snapshot is the node proxy's whole view of the mesh at one version: what
// the operator streams (ARCHITECTURE.md §5) and, until it does, what a
// config file holds. It is JSON on disk. A Snapshot is immutable once
// published; readers may share it without locks.
//
// Parse and Store.Set index a Snapshot for O(1) lookups; the index is not
// updated if the fields are modified afterwards, so build a new Snapshot
// instead. Lookups on a Snapshot that was never indexed (or on a copy of
// one) still work, but index it on every call.
type Snapshot struct {
	// Version names this snapshot (opaque; for logs and acks).
	Version string `json:"version,omitempty"`
	// TrustDomain of the mesh's SPIFFE IDs; "" means cluster.local.
	TrustDomain string `json:"trustDomain,omitempty"`
	// PolicyMode is ModePermissive (default when "") or ModeStrict.
	PolicyMode string `json:"policyMode,omitempty"`
	// TrustBundle holds PEM root certificates trusted in addition to the
	// identity provider's own roots (a CA rotation adds the new root here
	// first).
	TrustBundle string `json:"trustBundle,omitempty"`

	Workloads []Workload `json:"workloads,omitempty"`
	Services  []Service  `json:"services,omitempty"`
	Policies  []Policy   `json:"policies,omitempty"`

	// idx is built by Parse or Store.Set before the Snapshot is shared and
	// never written afterwards; idx.snap == the Snapshot it indexes, so a
	// copied Snapshot does not use an index of the original.
	idx *index
}

// Workload is one pod (meshed or not) the proxy may talk to or serve.
type Workload struct {
	UID            string       `json:"uid"`
	Namespace      string       `json:"namespace"`
	Name           string       `json:"name"`
	ServiceAccount string       `json:"serviceAccount"`
	Node           string       `json:"node,omitempty"`
	IPs            []netip.Addr `json:"ips"`
	// Protocol is ProtocolHBONE (default when "") or ProtocolTCP.
	Protocol string `json:"protocol,omitempty"`

	// Telemetry metadata (Istio's labels, ARCHITECTURE.md §7).

	// WorkloadName is the owning workload, e.g. the Deployment's name
	// (Istio's source_workload/destination_workload); "" means the pod
	// name.
	WorkloadName      string `json:"workloadName,omitempty"`
	CanonicalService  string `json:"canonicalService,omitempty"`
	CanonicalRevision string `json:"canonicalRevision,omitempty"`
	App               string `json:"app,omitempty"`
	Version           string `json:"version,omitempty"`
	Cluster           string `json:"cluster,omitempty"`
}

// Service is a Kubernetes Service with its endpoints.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Hostname is the cluster DNS name, e.g. echo.shop.svc.cluster.local.
	Hostname  string        `json:"hostname,omitempty"`
	VIPs      []netip.Addr  `json:"vips"`
	Ports     []ServicePort `json:"ports"`
	Endpoints []Endpoint    `json:"endpoints,omitempty"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name string `json:"name,omitempty"`
	Port uint16 `json:"port"`
	// TargetPort is the endpoints' port when every endpoint uses the same
	// number; 0 when only Endpoint.Ports knows it (a named target port).
	TargetPort uint16 `json:"targetPort,omitempty"`
}

// Endpoint is one backend of a Service.
type Endpoint struct {
	Address netip.Addr `json:"address"`
	// WorkloadUID links the endpoint to a Workload; "" for an endpoint
	// that is not a known pod.
	WorkloadUID string `json:"workloadUid,omitempty"`
	Ready       bool   `json:"ready"`
	// Ports maps a service port to this endpoint's port, overriding
	// ServicePort.TargetPort.
	Ports map[uint16]uint16 `json:"ports,omitempty"`
}

// Policy is one compiled SMI TrafficTarget: which source identities may
// reach the workloads of one destination ServiceAccount, and how.
type Policy struct {
	// Name is the TrafficTarget's namespace/name, reported as the reason
	// of verdicts.
	Name        string      `json:"name"`
	Destination Destination `json:"destination"`
	// Sources are SPIFFE IDs (spiffe://td/ns/<ns>/sa/<sa>); ORed.
	Sources []string `json:"sources"`
	Rules   []Rule   `json:"rules"`
	// Invalid, when not empty, says why the TrafficTarget could not be
	// compiled (e.g. an unsupported rule kind). An invalid policy still
	// selects its destination but allows nothing: it is never silently
	// half-applied.
	Invalid string `json:"invalid,omitempty"`
}

// Destination selects the workloads of one ServiceAccount.
type Destination struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// Rule is one compiled rule of a TrafficTarget.
type Rule struct {
	// Kind is the SMI route kind: KindTCPRoute or KindHTTPRouteGroup.
	Kind string `json:"kind"`
	// Name is the route object's name.
	Name string `json:"name,omitempty"`
	// Ports the rule allows; empty means every port.
	Ports []uint16 `json:"ports,omitempty"`
	// HTTP is true when the rule matches on HTTP attributes, which only a
	// waypoint can enforce: at L4 such a rule allows nothing (fail
	// closed).
	HTTP bool `json:"http,omitempty"`
}
