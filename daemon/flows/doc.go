// Package flows is the node's flow server in weft-agent (ARCHITECTURE.md §7):
// a bounded ring of flow records fed by the node's producers, served with
// Hubble's Observer API so `weft observe` and the real hubble CLI read it.
//
// Producers (weft-ztunnel, later waypoints) stream Hubble flow records over
// FlowExport (api/flows/v1) on a root-only unix socket; in-process producers
// (the datapath) call Server.Add. The server stamps node_name (and time,
// uuid and emitter when missing) and stores them; a producer's reported
// loss becomes a LostEvent in the ring. Writers never wait for readers.
//
// Readers call Observer.GetFlows: number (last or first N), follow,
// since/until, whitelist/blacklist FlowFilters and field masks are all
// applied here, in Hubble's semantics. Each reader has its own cursor; a
// reader the writers lap by a whole ring gets a LostEvent
// (HUBBLE_RING_BUFFER) with the exact number of flows it skipped, and the
// producer losses it skipped with their own sources, so for every reader
// delivered + reported lost = produced. ServerStatus, GetNodes and
// GetNamespaces describe this node; the gRPC health service reports
// "hubble.server.Observer".
//
// The Observer API is served on a root-only unix socket without
// authorisation (ServeObserver) and on the node IP over TLS
// (ServeObserverTLS) with callers authorised by TokenReview +
// SubjectAccessReview (KubeAuthorizer: get nodes/flows <node>); the TLS
// certificate is self-signed per start (SelfSignedCert) and published on
// the agent's pod (PublishCert, CertAnnotation) for clients to pin.
//
// The package must never import another weft component or tests/.
package flows
