// Package flowexport is the node proxy's side of the node-local flow export
// API (api/flows/v1, ARCHITECTURE.md §7): it hands the Hubble flow records
// the proxy produces to the node's weft-agent over the agent's unix socket.
//
// Record never blocks the proxy: records wait in a bounded queue, and a
// record that finds the queue full is counted as lost. One goroutine (Run)
// sends what is queued in batches on a FlowExport stream, reconnecting with
// backoff when the agent is unreachable. Every lost record is reported to
// the agent in the lost field of a later request, so that, for the agent's
// readers, delivered + reported lost = produced:
//
//   - queue full (reason "queue_full", or "agent_unreachable" when no stream
//     is open): counted at once, reported in the next request;
//   - a batch whose Send fails ("send_failed"): counted when the Send
//     fails, reported on the next stream together with whatever lost count
//     that failed request carried.
//
// The one loss the agent cannot be told of is the proxy's own exit: records
// still queued when the shutdown flush times out, or recorded after it, are
// counted with reason "shutdown" in weft_ztunnel_flows_lost_total only.
// A clean shutdown ends the stream with CloseAndRecv, which returns only
// after the agent has read every request. (FlowExport has no per-batch
// acknowledgement: requests already handed to gRPC when the agent dies are
// neither delivered nor reported.)
//
// flowexport must never import another weft component, the proxy packages
// that use it, or client-go.
package flowexport
