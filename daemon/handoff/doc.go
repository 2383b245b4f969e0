// Package handoff is the agent side of the in-pod handoff protocol
// (api/inpod/v1): a Server that listens on the node proxy's unix socket and
// hands every enrolled pod's network namespace to each connected proxy
// (weft-ztunnel), so the proxy opens that pod's listeners inside the pod's
// netns (ARCHITECTURE.md §3.1, STYLE.md items 18 and 9).
//
// Each proxy connection gets Hello, a snapshot of the enrolled pods (from the
// snapshot function given to New) and SnapshotSent, then incremental Add and
// Remove calls. The newest connection is the active one: Add goes to it only,
// Remove goes to every connection (a proxy being replaced still holds the pods
// it had), as Istio's ztunnelserver does. One sender goroutine per connection
// serialises each send with its acknowledgement.
//
// The package never closes its callers' netns files; it sends duplicates it
// owns. It must never import another weft component or tests/.
package handoff
