package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
)

// Defaults shared with redirect.c (ARCHITECTURE.md §3.1). TestConstants checks
// that they match the compiled object.
const (
	// SocketMark is the mark ztunnel sets (SO_MARK) on every socket it
	// creates in a pod netns; the outbound programs never redirect a socket
	// whose mark matches (mark & SocketMarkMask) == SocketMark.
	SocketMark = 0x539
	// SocketMarkMask selects the bits of the socket mark compared with SocketMark.
	SocketMarkMask = 0xfff

	// OutboundPort is ztunnel's outbound listener on 127.0.0.1 in each pod netns.
	OutboundPort = 15001
	// InboundPort is ztunnel's plaintext inbound listener in each pod netns.
	InboundPort = 15006
	// HBONEPort is ztunnel's HBONE (mTLS tunnel) listener in each pod netns.
	HBONEPort = 15008
)

var (
	// ErrNotFound is returned by lookups of absent entries.
	ErrNotFound = errors.New("not found")
	// ErrIncompatiblePins is returned by Load when PinDir holds maps of an
	// incompatible layout (an upgrade that changed a map): Cleanup the pin
	// dir (which detaches the old programs) and Load again.
	ErrIncompatiblePins = errors.New("pinned maps incompatible with this version")
	// ErrUnsupported is returned on platforms without the eBPF datapath.
	ErrUnsupported = errors.ErrUnsupported
)

// Options configure Load.
type Options struct {
	// PinDir is a directory on a bpffs (e.g. /sys/fs/bpf/weft) that holds
	// this agent's pins: maps, programs and links. It is created if missing.
	// With a PinDir, attachments survive Close and the process; a later Load
	// with the same PinDir reuses the maps and the attachments (no duplicate
	// attachment) and moves them to the newly loaded programs. Empty means
	// no pinning: everything is released by Close.
	PinDir string

	// SocketMark and SocketMarkMask override the mark of sockets that are
	// never redirected; zero means SocketMark and SocketMarkMask.
	SocketMark, SocketMarkMask uint32
}

// PodInfo describes an enrolled pod netns (the value of the mesh_netns map).
type PodInfo struct {
	// PodID is an agent-chosen identifier, recorded with each original
	// destination.
	PodID uint32
	// Flags is reserved and must be 0.
	Flags uint32
	// IP is the pod's own IPv4 address: connections to it are not
	// redirected, and getsockname reports it for redirected sockets. An IPv4
	// address or the zero Addr.
	IP netip.Addr
	// OutboundPort is ztunnel's outbound listener port on 127.0.0.1 in the
	// pod netns; 0 means OutboundPort.
	OutboundPort uint16
}

// IngressConfig configures the tcx ingress program for one pod (the
// ingress_cfg map, keyed by PodIP: a tc program cannot learn the netns of a
// packet that arrives from another netns, and an ifindex is only unique
// within its netns).
type IngressConfig struct {
	// PodIP is the pod's IPv4 address, the destination of its inbound
	// SYNs. Required.
	PodIP netip.Addr
	// ProbeSource is the node-side address kubelet probes come from (the
	// pod's gateway / host-side veth address). SYNs from it pass to the app.
	// The zero Addr disables the exception.
	ProbeSource netip.Addr
	// InboundPort is ztunnel's plaintext listener port; 0 means InboundPort.
	InboundPort uint16
	// HBONEPort is the port that passes untouched; 0 means HBONEPort.
	HBONEPort uint16
}

// Counters are the datapath's event counts, summed over CPUs.
type Counters struct {
	Redirected            uint64 // outbound connects rewritten to ztunnel
	SkippedUDP            uint64 // not a TCP stream socket (e.g. DNS over UDP)
	SkippedLoopback       uint64 // destination in 127.0.0.0/8 or 0.0.0.0
	SkippedSelf           uint64 // destination is the pod's own IP
	SkippedMarked         uint64 // socket carries ztunnel's mark
	SkippedBoundDev       uint64 // socket bound to a device (SO_BINDTODEVICE)
	SkippedIPv6           uint64 // pure IPv6 TCP destination (not meshed)
	InboundAssigned       uint64 // SYNs assigned to the inbound listener
	InboundDropNoListener uint64 // SYNs dropped: no inbound listener (fail closed)
	ProbePass             uint64 // SYNs from the probe source passed to the app
	Errors                uint64 // map update or sk_assign failures
}

// NetnsRunner runs fn with the calling goroutine's OS thread inside a
// network namespace and returns fn's error. Syscalls fn makes on its own
// goroutine run in that namespace. See InNetns and InNetnsPath; the daemon
// may pass its own (internal/netns.Do).
type NetnsRunner func(fn func() error) error

// EventKind says why the datapath gave up on a connection it should have
// redirected (the kind field of redirect.c's datapath_event).
type EventKind uint32

// Event kinds. TestConstants checks that they match redirect.c.
const (
	// EventRedirectRecordFailed: connect() of an enrolled pod could not
	// record its original destination (sk_orig update failed); the app got
	// EPERM (fail closed).
	EventRedirectRecordFailed EventKind = 1
	// EventOrigDstUpdateFailed: sockops could not key the original
	// destination by source address (orig_dst update failed); ztunnel will
	// not find where the redirected connection was going.
	EventOrigDstUpdateFailed EventKind = 2
	// EventInboundNoListener: an inbound SYN was dropped because no
	// ztunnel inbound listener was there (fail closed).
	EventInboundNoListener EventKind = 3
	// EventInboundAssignFailed: an inbound SYN was dropped because
	// bpf_sk_assign to the listener failed.
	EventInboundAssignFailed EventKind = 4
)

func (k EventKind) String() string {
	switch k {
	case EventRedirectRecordFailed:
		return "redirect-record-failed"
	case EventOrigDstUpdateFailed:
		return "orig-dst-update-failed"
	case EventInboundNoListener:
		return "inbound-no-listener"
	case EventInboundAssignFailed:
		return "inbound-assign-failed"
	}
	return fmt.Sprintf("kind-%d", uint32(k))
}

// Event is one connection the datapath gave up on, read from its ring
// buffer with an EventReader.
type Event struct {
	Kind EventKind
	// Errno is the error of the failed map update or helper (E2BIG for a
	// full map), 0 when none failed (no listener).
	Errno syscall.Errno
	// Time is when the program ran (to the precision of converting the
	// kernel's monotonic clock).
	Time time.Time
	// NetnsCookie is the pod netns; 0 when unknown (inbound SYN to an IP
	// without IngressConfig).
	NetnsCookie uint64
	// CgroupID is the cgroup of the task that connected, for
	// EventRedirectRecordFailed; 0 otherwise.
	CgroupID uint64
	// Src and Dst are the connection's IPv4 source and (original)
	// destination. For EventRedirectRecordFailed the source is the pod IP
	// with port 0 (the local port is not chosen yet).
	Src, Dst netip.AddrPort
}
