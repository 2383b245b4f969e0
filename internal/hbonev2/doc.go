// Package hbonev2 speaks HBONE, Istio ambient's tunnel protocol: one HTTP/2
// CONNECT stream per proxied TCP connection, multiplexed over a connection
// to the destination pod's port 15008, with :authority naming the original
// destination ip:port (ARCHITECTURE.md §3.2). ServeConn terminates streams
// on the server side; Pool opens them on the client side and keeps the
// connections, keyed by source pod, both identities and destination.
//
// It has the API and semantics of internal/hbone but implements HTTP/2
// itself on x/net/http2's Framer and hpack instead of x/net's Server and
// Transport, to spend less CPU per byte proxied: one reader goroutine per
// connection hands DATA straight to per-stream buffers, writers write their
// frames from their own goroutine and flush once per Write, and window
// updates are coalesced. Unlike internal/hbone, a server's CloseWrite sends
// END_STREAM at once, so the client sees io.EOF while it is still sending.
//
// The package only moves bytes. It takes connections that the caller has
// already secured (TLS 1.3, ALPN "h2", peer identity verified) and makes no
// policy decisions: the server's handler decides whether to accept. It uses
// only the standard library and golang.org/x/net, and must never import a
// weft component (daemon, ztunnel, l7proxy, operator) or weft's identity
// code (internal/spiffe): whoever hands it a connection has already decided
// whom it talks to.
package hbonev2
