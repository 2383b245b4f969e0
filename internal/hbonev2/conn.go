package hbonev2

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Conn is one tunnelled TCP stream, seen from either end. Read and Write may
// be called from different goroutines at the same time; Close may be called
// from any goroutine at any time and unblocks both.
//
// Close aborts the stream (RST_STREAM) unless both directions have already
// finished (this end's CloseWrite, and Read returned io.EOF), in which case
// it only releases the stream. A graceful end is therefore CloseWrite, read
// to io.EOF, then Close, as with a TCP connection whose unread data turns
// close into a reset. Every Conn must be closed.
type Conn interface {
	io.ReadWriteCloser
	// CloseWrite ends this end's direction of the stream; data written
	// before it is delivered first. Further writes fail. It sends
	// END_STREAM at once on either end, and the peer's Read returns io.EOF
	// once it has read the data before it.
	CloseWrite() error
}

// StatusError is returned by Pool.Connect when the server answered the
// CONNECT with a status other than 2xx. Reason is the server's
// x-weft-reason header, possibly empty. It is a plain value, safe to share
// once returned.
type StatusError struct {
	Code   int
	Reason string
}

func (e *StatusError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("hbone connect refused with status %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("hbone connect refused with status %d %s: %s", e.Code, http.StatusText(e.Code), e.Reason)
}

// ReasonHeader is the response header that carries the reason of a refused
// stream.
const ReasonHeader = "x-weft-reason"

// maxReasonLen bounds the reason a server sends, so a handler passing an
// error string through cannot produce an oversized header block.
const maxReasonLen = 256

var (
	// ErrPoolClosed is returned by Pool.Connect after Pool.Close.
	ErrPoolClosed = errors.New("hbone pool closed")
	// ErrEvicted is returned by Pool.Connect when the connection it was
	// waiting for was evicted before it could be used.
	ErrEvicted = errors.New("hbone connection evicted")
	// errWriteClosed is returned by Write after CloseWrite.
	errWriteClosed = errors.New("hbone stream closed for writing")
)

// sanitizeReason makes reason a valid header value: control characters
// would make a peer's HTTP/2 stack drop the header or the stream, so they
// become spaces.
func sanitizeReason(reason string) string {
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	clean := true
	for i := 0; i < len(reason); i++ {
		if c := reason[i]; c < 0x20 || c == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return reason
	}
	b := []byte(reason)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}
