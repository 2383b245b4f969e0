// Package inpodv1 is version 1 of weft's in-pod handoff protocol: how the
// node agent (weft-agent) hands each enrolled pod's network namespace to the
// node proxy (weft-ztunnel), so that the proxy opens that pod's listeners
// (15001 outbound, 15006 plaintext inbound, 15008 HBONE) and makes its
// upstream dials inside the pod's netns (ARCHITECTURE.md §3.1). It is
// modelled on Istio's ZDS (istio/istio pkg/zdsapi/zds.proto).
//
// # Transport
//
// A SOCK_SEQPACKET unix socket ("unixpacket"); the agent listens, the proxy
// connects. Every packet holds exactly one JSON object of at most
// MaxMessageSize bytes, discriminated by its "type" member. AddWorkload, and
// only AddWorkload, carries exactly one file descriptor as SCM_RIGHTS
// ancillary data: the pod's network namespace (an open /proc/<pid>/ns/net or
// /run/netns/<name>). Members this version does not know are ignored; an
// unknown "type" is an error.
//
//	agent → proxy  {"type":"hello","version":1}
//	agent → proxy  {"type":"addWorkload","workload":{"uid":"6c0f…","namespace":"shop",
//	                "name":"cart-7d9f","serviceAccount":"cart","node":"node-1",
//	                "ips":["10.244.1.7"],"netnsCookie":4099}}   + SCM_RIGHTS netns fd
//	agent → proxy  {"type":"snapshotSent"}
//	agent → proxy  {"type":"removeWorkload","uid":"6c0f…","drain":true}
//	proxy → agent  {"type":"ack"}
//	proxy → agent  {"type":"ack","error":"open listeners of shop/cart-7d9f: …"}
//
// # State machine
//
// Per connection, the agent is the only side that initiates:
//
//  1. Hello. The agent sends Hello{Version}. A proxy that speaks the version
//     answers Ack{}; one that does not answers Ack{Error} and closes the
//     connection.
//  2. Snapshot. The agent sends one AddWorkload per pod enrolled at that
//     moment, then SnapshotSent. After acknowledging SnapshotSent the proxy
//     knows the complete set: it releases (draining) every pod it still
//     serves from an earlier connection that the snapshot did not name.
//  3. Incremental. The agent sends AddWorkload and RemoveWorkload as pods are
//     enrolled, unenrolled and deleted, for as long as the connection lives.
//
// Every message is answered by exactly one Ack, in order, and the agent sends
// nothing more until the previous message was acknowledged: at most one
// message is in flight in each direction. An Ack with an empty Error means
// the message was applied; a non-empty Error means it was refused and the
// proxy state is as before the message. The proxy never sends anything but
// Acks; any other packet from it is a protocol violation that ends the
// connection, as does any malformed packet in either direction.
//
// Add and Remove are idempotent: an AddWorkload for a known UID with the same
// network namespace (same device and inode) is a no-op that only refreshes
// the workload's metadata, one with a different namespace replaces the old
// one (its listeners and connections are closed at once: the old sandbox is
// gone); a RemoveWorkload for an unknown UID is acknowledged with an empty
// Error. RemoveWorkload with Drain=true means the pod was unenrolled: close
// its listeners and let established connections finish. Drain=false means the
// pod was deleted: close its listeners and connections at once, and drop the
// netns descriptor so the namespace can be freed.
//
// When a second proxy connects (a proxy upgrade), it gets its own Hello and
// snapshot; the agent sends later AddWorkloads to the newest connection only
// and RemoveWorkloads to every connection, as Istio does.
//
// Conn is the transport; Encode and Decode are the framing. The package uses
// only the standard library (no golang.org/x/sys/unix) and must never import
// a weft component or tests/.
package inpodv1
