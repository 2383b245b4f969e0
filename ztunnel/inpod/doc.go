// Package inpod is the node proxy's side of the in-pod handoff protocol
// (api/inpod/v1): it connects to the agent's socket, receives each enrolled
// pod's network namespace, opens that pod's listeners inside it (15001
// outbound, 15006 plaintext inbound, 15008 HBONE) and creates every upstream
// socket of the pod there, marked so the eBPF programs never redirect the
// proxy's own traffic (ARCHITECTURE.md §3.1).
//
// What the proxy does with an accepted connection is the Handler's job
// (ztunnel/proxy); this package owns the pods' lifetimes: a pod is
// acknowledged to the agent only after Handler.Added succeeded (the proxy
// holds the pod's certificate), an unenrolled pod's listeners close while its
// connections finish (drain), and a deleted pod's listeners and connections
// close at once and its netns descriptor is dropped.
//
// inpod enters namespaces only through internal/netns. It must never import
// another weft component, client-go or tests/.
package inpod
