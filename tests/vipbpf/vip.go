package vipbpf

import "errors"

// ErrUnsupported is returned on platforms without eBPF.
var ErrUnsupported = errors.ErrUnsupported

// Counters are the rewriter's event counts, summed over CPUs.
type Counters struct {
	Rewritten uint64 // connects to a VIP, rewritten to its backend
	Passed    uint64 // IPv4 connects to anything else, left alone
}
