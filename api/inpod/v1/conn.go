//go:build unix

package inpodv1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// maxRecvFDs is how many descriptors one Recv can take in. AddWorkload
// carries one; room for a few more lets Recv see (and close) the extras
// instead of having the kernel truncate them silently.
const maxRecvFDs = 8

// Conn is one end of a protocol connection: a SOCK_SEQPACKET unix socket on
// which every packet is one message. Conn frames and validates messages; it
// does not enforce the message order of the state machine (see the package
// documentation), which is the caller's job.
//
// Conn is safe for concurrent use; each Send and each Recv moves one whole
// packet.
type Conn struct {
	c *net.UnixConn

	// recvMu guards the buffers below.
	recvMu sync.Mutex
	buf    []byte
	oob    []byte
}

// NewConn wraps c, which must be a "unixpacket" connection. The Conn owns c.
func NewConn(c *net.UnixConn) *Conn {
	return &Conn{c: c}
}

// Dial connects to the agent's socket at path.
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", path, err)
	}
	return NewConn(c.(*net.UnixConn)), nil
}

// Send writes m as one packet. fd, the pod's netns, must be non-nil for
// AddWorkload and nil for every other message; Send does not close it (the
// kernel passes a duplicate to the peer).
func (c *Conn) Send(m Message, fd *os.File) error {
	b, err := Encode(m)
	if err != nil {
		return err
	}
	switch {
	case CarriesFD(m) && fd == nil:
		return fmt.Errorf("send %s: %w: no netns descriptor", m.Type(), ErrMalformed)
	case !CarriesFD(m) && fd != nil:
		return fmt.Errorf("send %s: %w: message must not carry a descriptor", m.Type(), ErrMalformed)
	}
	if fd == nil {
		return c.write(m, b, nil)
	}
	rc, err := fd.SyscallConn()
	if err != nil {
		return fmt.Errorf("send %s: netns descriptor: %w", m.Type(), err)
	}
	var werr error
	// Control holds a reference on fd for the duration of the write, so a
	// concurrent Close cannot recycle the descriptor number.
	if err := rc.Control(func(raw uintptr) {
		werr = c.write(m, b, syscall.UnixRights(int(raw)))
	}); err != nil {
		return fmt.Errorf("send %s: netns descriptor: %w", m.Type(), err)
	}
	return werr
}

func (c *Conn) write(m Message, b, oob []byte) error {
	n, _, err := c.c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("send %s: %w", m.Type(), err)
	}
	if n != len(b) {
		return fmt.Errorf("send %s: short write: %d of %d bytes", m.Type(), n, len(b))
	}
	return nil
}

// Recv reads one packet. For AddWorkload it returns the netns descriptor,
// which the caller owns; for every other message the file is nil. On error
// any descriptors that came with the packet are closed. At the end of the
// stream the error is io.EOF (possibly wrapped). Errors about the packet's
// content wrap ErrMalformed or ErrTooLarge; after one the stream is still
// framed correctly, but the peer broke the protocol and the connection
// should be closed.
func (c *Conn) Recv() (Message, *os.File, error) {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	if c.buf == nil {
		c.buf = make([]byte, MaxMessageSize)
		c.oob = make([]byte, syscall.CmsgSpace(maxRecvFDs*4))
	}
	n, oobn, flags, _, err := c.c.ReadMsgUnix(c.buf, c.oob)
	files, perr := parseRights(c.oob[:oobn])
	if err != nil {
		closeAll(files)
		if errors.Is(err, io.EOF) {
			return nil, nil, io.EOF
		}
		return nil, nil, fmt.Errorf("receive message: %w", err)
	}
	if perr != nil {
		closeAll(files)
		return nil, nil, fmt.Errorf("receive message: %w: %w", ErrMalformed, perr)
	}
	if flags&syscall.MSG_TRUNC != 0 {
		closeAll(files)
		return nil, nil, fmt.Errorf("receive message: %w: packet larger than %d bytes", ErrTooLarge, MaxMessageSize)
	}
	if flags&syscall.MSG_CTRUNC != 0 {
		closeAll(files)
		return nil, nil, fmt.Errorf("receive message: %w: more than %d descriptors", ErrMalformed, maxRecvFDs)
	}
	m, err := Decode(c.buf[:n])
	if err != nil {
		closeAll(files)
		return nil, nil, fmt.Errorf("receive message: %w", err)
	}
	switch {
	case CarriesFD(m) && len(files) != 1:
		closeAll(files)
		return nil, nil, fmt.Errorf("receive %s: %w: %d descriptors, want 1", m.Type(), ErrMalformed, len(files))
	case !CarriesFD(m) && len(files) != 0:
		closeAll(files)
		return nil, nil, fmt.Errorf("receive %s: %w: %d unexpected descriptors", m.Type(), ErrMalformed, len(files))
	}
	if len(files) == 1 {
		return m, files[0], nil
	}
	return m, nil, nil
}

// parseRights returns the descriptors in the SCM_RIGHTS messages of oob as
// files. Control messages of other kinds are ignored.
func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	scms, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control messages: %w", err)
	}
	var files []*os.File
	for i := range scms {
		if scms[i].Header.Level != syscall.SOL_SOCKET || scms[i].Header.Type != syscall.SCM_RIGHTS {
			continue
		}
		fds, err := syscall.ParseUnixRights(&scms[i])
		if err != nil {
			return files, fmt.Errorf("parse SCM_RIGHTS: %w", err)
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "netns"))
		}
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// SetDeadline sets the read and write deadlines of the connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.c.SetDeadline(t) }

// SetReadDeadline sets the deadline of Recv.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline of Send.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// Close closes the connection; blocked Send and Recv calls return errors.
func (c *Conn) Close() error { return c.c.Close() }
