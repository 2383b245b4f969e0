//go:build !linux

package redirect

import (
	"net/netip"

	"github.com/cilium/ebpf/link"
)

// Objects is the loaded datapath. On this platform there is none: every
// method returns ErrUnsupported.
type Objects struct{}

// Load returns ErrUnsupported: the datapath needs Linux.
func Load(Options) (*Objects, error) { return nil, ErrUnsupported }

// Cleanup returns ErrUnsupported.
func Cleanup(string) error { return ErrUnsupported }

// Cgroup2Root returns ErrUnsupported.
func Cgroup2Root() (string, error) { return "", ErrUnsupported }

// InNetns returns a NetnsRunner that fails with ErrUnsupported.
func InNetns(int) NetnsRunner { return func(func() error) error { return ErrUnsupported } }

// InNetnsPath returns a NetnsRunner that fails with ErrUnsupported.
func InNetnsPath(string) NetnsRunner { return InNetns(-1) }

// NetnsCookie returns ErrUnsupported.
func NetnsCookie(NetnsRunner) (uint64, error) { return 0, ErrUnsupported }

// AttachCgroup returns ErrUnsupported.
func (*Objects) AttachCgroup(string) ([]link.Link, error) { return nil, ErrUnsupported }

// DetachCgroup returns ErrUnsupported.
func (*Objects) DetachCgroup(string) error { return ErrUnsupported }

// AttachIngress returns ErrUnsupported.
func (*Objects) AttachIngress(NetnsRunner, string, IngressConfig) (uint64, error) {
	return 0, ErrUnsupported
}

// DetachIngress returns ErrUnsupported.
func (*Objects) DetachIngress(uint64) error { return ErrUnsupported }

// Enroll returns ErrUnsupported.
func (*Objects) Enroll(uint64, PodInfo) error { return ErrUnsupported }

// Unenroll returns ErrUnsupported.
func (*Objects) Unenroll(uint64) error { return ErrUnsupported }

// Enrolled returns ErrUnsupported.
func (*Objects) Enrolled() (map[uint64]PodInfo, error) { return nil, ErrUnsupported }

// IsEnrolled returns ErrUnsupported.
func (*Objects) IsEnrolled(uint64) (bool, error) { return false, ErrUnsupported }

// LookupOrigDst returns ErrUnsupported.
func (*Objects) LookupOrigDst(uint64, netip.Addr, uint16) (netip.AddrPort, error) {
	return netip.AddrPort{}, ErrUnsupported
}

// Counters returns ErrUnsupported.
func (*Objects) Counters() (Counters, error) { return Counters{}, ErrUnsupported }

// Close does nothing.
func (*Objects) Close() error { return nil }

// EventReader reads datapath events; on this platform there are none.
type EventReader struct{}

// NewEventReader returns ErrUnsupported.
func (*Objects) NewEventReader() (*EventReader, error) { return nil, ErrUnsupported }

// Read returns ErrUnsupported.
func (*EventReader) Read() (Event, error) { return Event{}, ErrUnsupported }

// Close does nothing.
func (*EventReader) Close() error { return nil }

// EventsLost returns ErrUnsupported.
func (*Objects) EventsLost() (uint64, error) { return 0, ErrUnsupported }
