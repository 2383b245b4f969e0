package testapp

import (
	"context"
	"net"
	"net/http"
	"strings"

	"golang.org/x/net/http2"
	//lint:ignore SA1019 net/http serves prior-knowledge h2c itself but not the RFC 7540 §3.2 "Upgrade: h2c" handshake, which clients such as curl --http2 use.
	"golang.org/x/net/http2/h2c"
)

// connKey is the request context key under which withConn stores the
// request's connection.
type connKey struct{}

// withConn is an http.Server ConnContext hook that makes the connection
// available to withH2CUpgrade.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// withH2CUpgrade wraps h so that HTTP/1.1 requests carrying "Upgrade: h2c"
// switch the connection to HTTP/2 (RFC 7540 §3.2). Prior-knowledge h2c never
// reaches it: the http.Server handles that itself when its Protocols allow
// unencrypted HTTP/2.
//
// An upgraded connection is hijacked, so http.Server.Shutdown no longer sees
// it; it is closed when closing is done. The server must use withConn as its
// ConnContext.
func withH2CUpgrade(h http.Handler, closing context.Context) http.Handler {
	//lint:ignore SA1019 see the import comment.
	up := h2c.NewHandler(h, &http2.Server{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 1 || !headerHasToken(r.Header, "Upgrade", "h2c") {
			h.ServeHTTP(w, r)
			return
		}
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			stop := context.AfterFunc(closing, func() { _ = c.Close() })
			defer stop()
		}
		// Serves the whole upgraded connection before returning.
		up.ServeHTTP(w, r)
	})
}

// headerHasToken reports whether the comma-separated values of header key
// contain token, compared case-insensitively.
func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
