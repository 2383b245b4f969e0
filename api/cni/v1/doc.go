// Package cniv1 defines version 1 of the wire protocol between weft's chained
// CNI plugin (cmd/weft-cni) and the node agent (weft-agent), so that the agent
// enrolls a new pod in the mesh before any of its containers start.
//
// # Transport
//
// HTTP/1.1 with JSON bodies over a unix socket on the node, by default
// [DefaultSocket]. The socket is owned by root with mode 0600: whoever can
// connect can ask the agent to enroll or release any netns, so the socket's
// file mode is the only access control. The host part of request URLs is
// ignored ("http://weft-agent" by convention).
//
// # Operations
//
// Every request is a POST with Content-Type application/json and a body whose
// "version" field is [Version]. Each exchange is independent; the plugin
// makes one request per CNI command and the agent keeps no connection state.
//
//	POST /v1/pods/add    body AddRequest  → Response
//	POST /v1/pods/check  body AddRequest  → Response
//	POST /v1/pods/del    body DelRequest  → Response
//
// add (CNI ADD) asks the agent to enroll the pod whose network namespace is
// Netns. The agent answers only once the pod is enrolled, so that the pod's
// first connection is already meshed; the plugin lets the container runtime
// start the pod's containers only after a 200 answer. add is idempotent: the
// runtime may retry ADD for the same container.
//
// check (CNI CHECK) asks whether the pod is enrolled; the agent answers 200
// with Enrolled false (and the reason in Error) when it is not.
//
// del (CNI DEL) releases the pod. It is idempotent and must succeed for a pod
// the agent never saw; Netns may be empty or name a namespace that no longer
// exists.
//
// # Answers
//
//   - 200 OK, Response: the operation was carried out. For add, Enrolled
//     false with a Reason means the agent deliberately left the pod out of the
//     mesh (the pod starts unmeshed; the plugin logs the reason).
//   - 400 Bad Request, Response.Error: the body is not valid JSON, names a
//     version other than [Version], or lacks a required field. Retrying the
//     same request is pointless.
//   - 404 Not Found / 405 Method Not Allowed: unknown path or not a POST.
//   - 500 Internal Server Error or 504 Gateway Timeout, Response.Error: the
//     agent could not carry out the operation (in time). The plugin fails the
//     CNI command with "try again later" unless it is configured to fail open.
//
// # Versioning
//
// A future incompatible protocol gets a new package (cniv2), new paths
// (/v2/...) and a new Version string; an agent may serve several versions at
// once. Within v1, fields are only ever added, and receivers ignore fields
// they do not know.
//
// This package holds only wire types and constants; it imports nothing of
// weft and must never import a component.
package cniv1
