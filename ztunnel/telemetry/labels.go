package telemetry

import (
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/state"
)

// Reporter says which end of a connection this proxy serves, and so which
// side's metrics it reports (Istio's reporter label).
type Reporter uint8

// Reporters. The zero Reporter is reported as "unknown".
const (
	// ReporterSource: the local pod is the client (an outbound
	// connection).
	ReporterSource Reporter = iota + 1
	// ReporterDestination: the local pod is the server (an inbound
	// connection).
	ReporterDestination
)

// String returns Istio's label value: "source", "destination" or "unknown".
func (r Reporter) String() string {
	switch r {
	case ReporterSource:
		return "source"
	case ReporterDestination:
		return "destination"
	default:
		return unknown
	}
}

// direction is the access log's and weft's own counters' name for r.
func (r Reporter) direction() string {
	switch r {
	case ReporterSource:
		return "outbound"
	case ReporterDestination:
		return "inbound"
	default:
		return unknown
	}
}

// ResponseFlags is Istio's response_flags label value: why a connection
// ended the way it did.
type ResponseFlags string

// Response flags, with the values Istio's ztunnel reports.
const (
	// FlagNone: the connection was proxied (it may still have ended with
	// an I/O error).
	FlagNone ResponseFlags = "-"
	// FlagDenied: authorization policy refused the connection.
	FlagDenied ResponseFlags = "DENY"
	// FlagConnectFailure: the upstream connection could not be made.
	FlagConnectFailure ResponseFlags = "CONNECT"
)

func (f ResponseFlags) value() string {
	if f == "" {
		return string(FlagNone)
	}
	return string(f)
}

// ConnInfo describes one proxied connection. Source is always the client
// and Destination the server, whichever of them is local. It is a plain
// value that Open, Denied and Failed copy; the Workload and Service it
// points to must not change while the connection is open (snapshots are
// immutable, so pointers into one are fine).
type ConnInfo struct {
	Reporter    Reporter
	Source      Peer
	Destination Peer
	// Service is the Service the client addressed, nil when it addressed a
	// pod (or anything else) directly.
	Service *state.Service
	// MutualTLS is true when the connection is carried over HBONE mTLS
	// (connection_security_policy="mutual_tls"); false for plaintext
	// ("unknown", as Istio reports it).
	MutualTLS bool
	// HBONEAddr is the tunnel target (the CONNECT :authority) when the
	// connection is carried over HBONE; Destination.Addr is then the
	// address of the HBONE listener. Zero for plaintext.
	HBONEAddr netip.AddrPort
}

// Peer is one end of a connection; a plain value, like ConnInfo.
type Peer struct {
	// Workload is the pod, nil when it is not a known workload.
	Workload *state.Workload
	// Identity is the peer's SPIFFE ID: verified in the handshake for a
	// remote peer, the workload's own for the local one; zero when there is
	// none (a plaintext client).
	Identity spiffe.ID
	// Addr is the peer's address as this proxy sees it.
	Addr netip.AddrPort
}

// unknown is Istio's value for every label it cannot fill.
const unknown = "unknown"

// Istio's defaults for a known workload without the metadata.
const (
	defaultRevision = "latest"
	defaultCluster  = "Kubernetes"
)

// Indexes of Istio's labels, in Istio's order.
const (
	lReporter = iota
	lSourceWorkload
	lSourceCanonicalService
	lSourceCanonicalRevision
	lSourceWorkloadNamespace
	lSourcePrincipal
	lSourceApp
	lSourceVersion
	lSourceCluster
	lDestinationService
	lDestinationServiceNamespace
	lDestinationServiceName
	lDestinationWorkload
	lDestinationCanonicalService
	lDestinationCanonicalRevision
	lDestinationWorkloadNamespace
	lDestinationPrincipal
	lDestinationApp
	lDestinationVersion
	lDestinationCluster
	lRequestProtocol
	lResponseFlags
	lConnectionSecurityPolicy
	numLabels
)

// istioLabels are the label names of Istio's TCP metrics, indexed by the
// constants above.
var istioLabels = [numLabels]string{
	"reporter",
	"source_workload",
	"source_canonical_service",
	"source_canonical_revision",
	"source_workload_namespace",
	"source_principal",
	"source_app",
	"source_version",
	"source_cluster",
	"destination_service",
	"destination_service_namespace",
	"destination_service_name",
	"destination_workload",
	"destination_canonical_service",
	"destination_canonical_revision",
	"destination_workload_namespace",
	"destination_principal",
	"destination_app",
	"destination_version",
	"destination_cluster",
	"request_protocol",
	"response_flags",
	"connection_security_policy",
}

// labelSet holds one connection's label values in istioLabels order.
type labelSet [numLabels]string

// resolveLabels derives Istio's label values for info, with response_flags
// "-" (the flags are known only at close). The values may not be valid
// UTF-8; see sanitize.
func resolveLabels(info *ConnInfo) labelSet {
	var l labelSet
	l[lReporter] = info.Reporter.String()

	src := describe(info.Source.Workload)
	l[lSourceWorkload] = src.workload
	l[lSourceCanonicalService] = src.canonicalService
	l[lSourceCanonicalRevision] = src.canonicalRevision
	l[lSourceWorkloadNamespace] = src.namespace
	l[lSourcePrincipal] = principal(info.Source.Identity)
	l[lSourceApp] = src.app
	l[lSourceVersion] = src.version
	l[lSourceCluster] = src.cluster

	l[lDestinationService], l[lDestinationServiceNamespace], l[lDestinationServiceName] = describeService(info)

	dst := describe(info.Destination.Workload)
	l[lDestinationWorkload] = dst.workload
	l[lDestinationCanonicalService] = dst.canonicalService
	l[lDestinationCanonicalRevision] = dst.canonicalRevision
	l[lDestinationWorkloadNamespace] = dst.namespace
	l[lDestinationPrincipal] = principal(info.Destination.Identity)
	l[lDestinationApp] = dst.app
	l[lDestinationVersion] = dst.version
	l[lDestinationCluster] = dst.cluster

	l[lRequestProtocol] = "tcp"
	l[lResponseFlags] = string(FlagNone)
	if info.MutualTLS {
		l[lConnectionSecurityPolicy] = "mutual_tls"
	} else {
		l[lConnectionSecurityPolicy] = unknown
	}
	return l
}

// sanitize replaces bytes that are not UTF-8: client_golang panics on such a
// label value, and a bad snapshot must not take the proxy down.
func (l *labelSet) sanitize() {
	for i, v := range l {
		if !utf8.ValidString(v) {
			l[i] = strings.ToValidUTF8(v, "\uFFFD")
		}
	}
}

// workloadLabels are the per-side label values of one workload.
type workloadLabels struct {
	workload, canonicalService, canonicalRevision, namespace, app, version, cluster string
}

// describe derives one side's labels the way istiod and ztunnel do: the
// workload name falls back to the pod name; the canonical service to the
// app label, then the workload name; the canonical revision to the version
// label, then "latest"; the cluster to "Kubernetes". For app and version
// weft reports the app and version labels when the pod has them (as Istio's
// sidecars do) and otherwise the canonical service and revision (as Istio's
// ztunnel always does). An unknown workload is "unknown" throughout.
func describe(w *state.Workload) workloadLabels {
	if w == nil {
		return workloadLabels{unknown, unknown, unknown, unknown, unknown, unknown, unknown}
	}
	var d workloadLabels
	d.workload = first(w.WorkloadName, w.Name, unknown)
	d.canonicalService = first(w.CanonicalService, w.App, d.workload)
	d.canonicalRevision = first(w.CanonicalRevision, w.Version, defaultRevision)
	d.namespace = first(w.Namespace, unknown)
	d.app = first(w.App, d.canonicalService)
	d.version = first(w.Version, d.canonicalRevision)
	d.cluster = first(w.Cluster, defaultCluster)
	return d
}

// describeService returns destination_service, its namespace and its name:
// "unknown" without a Service (a pod addressed directly), as Istio's ztunnel
// reports it — an address there would add a series per pod and grow without
// bound with pod churn.
func describeService(info *ConnInfo) (host, namespace, name string) {
	svc := info.Service
	if svc == nil {
		return unknown, unknown, unknown
	}
	return first(svc.Hostname, unknown), first(svc.Namespace, unknown), first(svc.Name, unknown)
}

func principal(id spiffe.ID) string {
	if id.IsZero() {
		return unknown
	}
	return id.String()
}

// first returns the first non-empty value.
func first(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
