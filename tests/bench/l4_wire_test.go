//go:build bench

package bench

import (
	"crypto/rand"
	"fmt"
	"net/netip"

	"github.com/weftmesh/weft/tests/capture"
)

// wireResult is what an observer of the underlay saw of one cross-node
// path while a marker travelled it as fortio's request (and echoed
// response) body.
type wireResult struct {
	path       l4Path
	markerSeen bool
	tlsPort    uint16
	tlsBytes   int64
}

// tlsPortOf is the port on which a path's traffic crosses the wire as TLS:
// stunnel's server port, HBONE for the mesh (the stand-in proxy forwards
// plaintext to the app's port instead), none for direct.
func tlsPortOf(path l4Path) uint16 {
	switch path {
	case pathStunnel:
		return stunnelFortioTLS
	case pathMeshed:
		return capture.HBONEPort
	}
	return fortioPort
}

// wireCheck captures the cluster's underlay while each cross-node target
// sends a marker, proving the benchmark measures what it says: direct
// traffic shows the marker (so the capture works), the stunnel pair shows
// only TLS, and so must the meshed path through weft's own proxy (HBONE on
// 15008). Through the recording stand-in, which does not encrypt, the
// meshed path is only reported.
func (b *l4Bench) wireCheck(targets []*l4Target, clientIP map[string]netip.Addr, serverIP map[string]netip.Addr) []wireResult {
	tb := b.tb
	tb.Helper()
	var out []wireResult
	for _, tg := range targets {
		if tg.loc != crossNode {
			continue
		}
		marker := "weft-bench-l4-marker-" + rand.Text()
		client, server := clientIP[tg.ns+"/"+tg.pod], serverIP[tg.ns]
		capt, err := capture.Underlay(b.ctx, tb, b.c, fmt.Sprintf("tcp and host %s and host %s", client, server))
		if err != nil {
			tb.Fatalf("wire check %s: %v", tg.path, err)
		}
		args := []string{b.tools.fortio, "load", "-qps", "100", "-c", "1", "-n", "20", "-payload", marker, "-json", "-", "-loglevel", "warning", tg.url}
		stdout, err := b.c.Exec(b.ctx, tg.ns, tg.pod, "main", args...)
		if err == nil {
			_, err = parseFortio(stdout)
		}
		if err != nil {
			tb.Fatalf("wire check %s: fortio load %s: %v", tg.path, tg.url, err)
		}
		res, err := capt.Stop()
		if err != nil {
			tb.Fatalf("wire check %s: %v", tg.path, err)
		}
		w := wireResult{path: tg.path, markerSeen: res.Contains([]byte(marker)), tlsPort: tlsPortOf(tg.path)}
		w.tlsBytes = res.TLSBytes(client, server, w.tlsPort)
		tb.Logf("wire check %s cross-node: marker on the wire %v, %d TLS bytes on port %d; %s", tg.path, w.markerSeen, w.tlsBytes, w.tlsPort, res.Summary())
		switch {
		case tg.path == pathDirect && !w.markerSeen:
			tb.Fatalf("wire check: the direct path's marker is not in the underlay capture: the capture does not see pod traffic\n%s", res.Summary())
		case tg.path == pathStunnel && (w.markerSeen || w.tlsBytes == 0):
			tb.Fatalf("wire check: the stunnel path's marker on the wire %v, %d TLS bytes on port %d: want TLS only", w.markerSeen, w.tlsBytes, w.tlsPort)
		case tg.path == pathMeshed && b.proxy.ds != standInProxyDaemonSet && (w.markerSeen || w.tlsBytes == 0):
			// weft's own proxy must carry meshed traffic as HBONE (mTLS).
			tb.Fatalf("wire check: the meshed path through %s: marker on the wire %v, %d TLS bytes on port %d: want HBONE only",
				b.proxy.ds, w.markerSeen, w.tlsBytes, w.tlsPort)
		}
		out = append(out, w)
	}
	return out
}

// wireText renders the wire check for the report.
func wireText(ws []wireResult) []string {
	var lines []string
	for _, w := range ws {
		seen := "not visible"
		if w.markerSeen {
			seen = "visible (plaintext)"
		}
		lines = append(lines, fmt.Sprintf("| %s | %s | %d (port %d) |", w.path, seen, w.tlsBytes, w.tlsPort))
	}
	return lines
}
