package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// OrigDstReader reads the pinned orig_dst map of an agent's pin root without
// loading the programs: what a node proxy (a separate process) needs to
// learn where a redirected connection was going. It is safe for concurrent
// use.
type OrigDstReader struct{ m *ebpf.Map }

// OpenOrigDst opens the orig_dst map pinned under pinDir, read-only.
func OpenOrigDst(pinDir string) (*OrigDstReader, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, redirectMapOrigDst), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open pinned orig_dst map in %s: %w", pinDir, err)
	}
	return &OrigDstReader{m: m}, nil
}

// Lookup is Objects.LookupOrigDst over the pinned map.
func (r *OrigDstReader) Lookup(netnsCookie uint64, src netip.AddrPort) (netip.AddrPort, error) {
	srcIP := src.Addr().Unmap()
	ip, err := beIP4(srcIP)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("look up original destination of %s: not an IPv4 address", src)
	}
	key := redirectOrigKey{NetnsCookie: netnsCookie, SrcIp4: ip, SrcPort: src.Port()}
	var v redirectOrigAddr
	if err := r.m.Lookup(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return netip.AddrPort{}, fmt.Errorf("look up original destination of %s in netns %d: %w", src, netnsCookie, ErrNotFound)
		}
		return netip.AddrPort{}, fmt.Errorf("look up original destination: %w", err)
	}
	return netip.AddrPortFrom(ip4FromBE(v.Ip4), beToHost16(v.Port)), nil
}

// Close releases the map handle.
func (r *OrigDstReader) Close() error { return r.m.Close() }
