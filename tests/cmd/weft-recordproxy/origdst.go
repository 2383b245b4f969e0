package main

import (
	"net/netip"
	"path/filepath"

	"github.com/weftmesh/weft/bpf/redirect"
	"github.com/weftmesh/weft/tests/recordproxy"
)

// The original destination of an outbound connection comes from the agent's
// pinned orig_dst map; --orig-dst-map names the agent's pin root (or the map
// file in it).
func init() {
	openOrigDstMap = func(path string) (recordproxy.OrigDstLookup, func() error, error) {
		if filepath.Base(path) == "orig_dst" {
			path = filepath.Dir(path)
		}
		r, err := redirect.OpenOrigDst(path)
		if err != nil {
			return nil, nil, err
		}
		lookup := func(cookie uint64, peer netip.AddrPort) (netip.AddrPort, error) { return r.Lookup(cookie, peer) }
		return lookup, r.Close, nil
	}
}
