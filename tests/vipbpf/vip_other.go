//go:build !linux

package vipbpf

import (
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Objects is the loaded rewriter. On this platform there is none: every
// method returns ErrUnsupported.
type Objects struct{}

// Load returns ErrUnsupported: the rewriter needs Linux.
func Load() (*Objects, error) { return nil, ErrUnsupported }

// Attach returns ErrUnsupported.
func (*Objects) Attach(string) (link.Link, error) { return nil, ErrUnsupported }

// SetBackend returns ErrUnsupported.
func (*Objects) SetBackend(netip.AddrPort, netip.AddrPort) error { return ErrUnsupported }

// Counters returns ErrUnsupported.
func (*Objects) Counters() (Counters, error) { return Counters{}, ErrUnsupported }

// ProgramID returns ErrUnsupported.
func (*Objects) ProgramID() (ebpf.ProgramID, error) { return 0, ErrUnsupported }

// Close does nothing.
func (*Objects) Close() error { return nil }
