package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

// conn is either half of a proxied connection: a TCP connection, a TLS
// connection or an HBONE stream.
type conn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

const copyBufferSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// pipe copies bytes both ways between down (the client side) and up (the
// server side) until both directions end, reporting each chunk to onRecv
// (client → server, Istio's "received") and onSent (server → client). It
// returns the byte counts and the first error that was not a clean end of
// stream. It copies with a read/write loop rather than io.Copy: splice(2)
// between TCP sockets would hide the bytes from the counters (and from
// sk_msg redirection, ARCHITECTURE.md §3.1).
func pipe(down, up conn, onRecv, onSent func(int)) (recv, sent int64, err error) {
	var (
		wg      sync.WaitGroup
		upErr   error
		upBytes int64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sent, upErr = copyHalf(down, up, onSent)
	}()
	upBytes, err = copyHalf(up, down, onRecv)
	wg.Wait()
	recv = upBytes
	if err == nil {
		err = upErr
	}
	return recv, sent, err
}

// copyHalf copies src to dst. At src's end of stream it half-closes dst; on
// an error it closes both, which ends the other direction too.
func copyHalf(dst, src conn, count func(int)) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				dst.Close()
				return total, cleanErr(werr)
			}
			total += int64(n)
			if count != nil {
				count(n)
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				dst.CloseWrite()
				return total, nil
			}
			src.Close()
			dst.Close()
			return total, cleanErr(rerr)
		}
	}
}

// cleanErr drops the "use of closed connection" that the other direction's
// close causes: it is the consequence of an error already reported.
func cleanErr(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
