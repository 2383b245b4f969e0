// Package redirect loads, pins and attaches weft's traffic-redirection eBPF
// programs (ARCHITECTURE.md §3.1) and owns their maps. It is the only package
// that touches the generated loader (redirect_bpfel.go): callers use Load, the
// Objects methods and the typed values of this package. It must never import
// a weft component (daemon, ztunnel, l7proxy, operator) or tests/.
//
// # Programs
//
// Outbound, attached with AttachCgroup at the cgroup v2 root (Cgroup2Root):
//
//   - cgroup/connect4, cgroup/connect6: a TCP connect() from an enrolled netns
//     (mesh_netns, keyed by netns cookie) to an IPv4 or IPv4-mapped IPv6
//     destination is rewritten to 127.0.0.1:<PodInfo.OutboundPort> (or
//     ::ffff:127.0.0.1) in the same netns, and the original destination is
//     recorded by socket cookie (sk_orig). Skipped: non-TCP sockets (DNS over
//     UDP), 127.0.0.0/8 and 0.0.0.0, the pod's own IP, sockets marked with
//     SocketMark (ztunnel's), sockets bound to a device, pure IPv6. MPTCP is
//     redirected like TCP.
//   - sockops: at TCP_CONNECT_CB (and ACTIVE_ESTABLISHED_CB) the entry is
//     re-keyed by (netns cookie, source IP, source port) in orig_dst, which
//     LookupOrigDst reads with the peer address of ztunnel's accepted
//     connection.
//   - cgroup/getpeername4/6, getsockname4/6: the app keeps seeing the
//     original destination and its pod IP.
//
// Inbound, attached with AttachIngress to the tcx ingress of a pod's eth0,
// from a thread inside the pod netns: a SYN that no existing socket owns is
// assigned (bpf_sk_assign) to ztunnel's plaintext listener
// (IngressConfig.InboundPort, bound to the pod IP or 0.0.0.0); SYNs to the
// HBONE port and from IngressConfig.ProbeSource pass; without a listener the
// SYN is dropped and counted (fail closed). Untouched packets get TCX_NEXT.
// IPv6 passes untouched.
//
// # Events
//
// Where a program gives up on a connection it should redirect — connect()
// cannot record the original destination (the app gets EPERM), sockops cannot
// update orig_dst, an inbound SYN finds no listener or bpf_sk_assign fails — it
// writes a datapath_event to the events ring buffer (256 KiB). Read them with
// NewEventReader as Event values; events that did not fit are counted
// (EventsLost).
//
// # Pins
//
// With Options.PinDir (one per agent) everything is pinned there: the maps
// under their names (mesh_netns, ingress_cfg, sk_orig, orig_dst, counters;
// not events and events_lost, which are per Load),
// the programs under their function names (weft_connect4, …), and the links
// as link_cgroup_<cgroup id>_<hook> and link_tcx_<netns cookie>. A restarted
// agent's Load reuses the maps and moves the pinned links to its new programs
// (no gap, no duplicate attachment); Cleanup detaches and removes only these.
//
// # Requirements
//
// Linux 6.6 or later (tcx), with BTF; CAP_BPF, CAP_NET_ADMIN and
// CAP_SYS_ADMIN (cgroup attach, setns). Objects is safe for concurrent use.
package redirect
