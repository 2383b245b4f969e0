// Package recordproxy is the stand-in node proxy of weft's tests, used until
// the real weft-ztunnel exists: it speaks the in-pod handoff protocol
// (api/inpod/v1) to the agent, opens each enrolled pod's listeners inside the
// pod's network namespace, and records every connection it accepts as a JSON
// line, so tests can prove where traffic was redirected.
//
// For every AddWorkload it enters the received netns on a goroutine locked to
// a throw-away OS thread (never unlocked, so the thread dies with the
// goroutine) and listens there on 127.0.0.1:15001 (outbound), 0.0.0.0:15006
// (plaintext inbound) and 0.0.0.0:15008 (HBONE), IPv4 only, without MPTCP.
// Every socket it creates in a pod netns carries the configured SO_MARK, so
// the eBPF programs skip it, and is checked (SO_NETNS_COOKIE) to really be in
// that netns.
//
// Per accepted connection:
//   - outbound (15001): the original destination comes from the
//     OrigDstLookup (the eBPF map; without one it is recorded as "" and the
//     connection is closed); the proxy dials it from the pod netns and copies
//     bytes both ways with a plain read/write loop (never splice, which
//     sk_msg redirection cannot see);
//   - inbound (15006): the original destination is the accepted socket's
//     local address (tcx sk_assign keeps it); the proxy dials the app there
//     from the pod netns, likewise;
//   - HBONE (15008): the proxy writes "weft-recordproxy hbone\n" and closes.
//
// A destination that is one of the proxy's own listeners is refused rather
// than looped. Each connection gets one Record line, written after the
// upstream dial so that it holds the upstream socket's address and mark.
//
// recordproxy is test harness: only tests/ may import it. It uses the test
// harness's own netns entry (not internal/netns, which does not exist yet).
package recordproxy
