//go:build unix

package inpodv1

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// connPair returns both ends of a connected SOCK_SEQPACKET socket pair: a
// Conn and the raw peer, for writing arbitrary packets.
func connPair(tb testing.TB) (*Conn, *net.UnixConn) {
	tb.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("socketpair: %v", err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "seqpacket")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			tb.Fatalf("file conn: %v", err)
		}
		conns[i] = c.(*net.UnixConn)
		tb.Cleanup(func() { conns[i].Close() })
	}
	deadline := time.Now().Add(10 * time.Second)
	conns[0].SetDeadline(deadline)
	conns[1].SetDeadline(deadline)
	return NewConn(conns[0]), conns[1]
}

// pipe returns a pipe; the read end sees EOF only once every copy of the
// write end, in this process, is closed: how tests prove that Recv closed
// the descriptors it refused.
func pipe(tb testing.TB) (r, w *os.File) {
	tb.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// assertAllClosed fails unless every write end of r's pipe is closed.
func assertAllClosed(tb testing.TB, r *os.File) {
	tb.Helper()
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		tb.Errorf("pipe read = %d, %v; want EOF (a copy of the write end is still open)", n, err)
	}
}

func TestConnRoundTrip(t *testing.T) {
	tests := map[string]struct {
		msg Message
	}{
		"hello":               {msg: Hello{Version: Version}},
		"addWorkload with fd": {msg: AddWorkload{Workload: testWorkload}},
		"snapshotSent":        {msg: SnapshotSent{}},
		"removeWorkload":      {msg: RemoveWorkload{UID: "u1", Drain: true}},
		"ack":                 {msg: Ack{}},
		"ack error":           {msg: Ack{Error: "refused"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			a, raw := connPair(t)
			b := NewConn(raw)
			var sent *os.File
			if CarriesFD(tt.msg) {
				f, err := os.Open("/proc/self/ns/net")
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				sent = f
			}
			if err := a.Send(tt.msg, sent); err != nil {
				t.Fatalf("Send(%#v): %v", tt.msg, err)
			}
			got, fd, err := b.Recv()
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			if !reflect.DeepEqual(got, tt.msg) {
				t.Errorf("Recv = %#v, want %#v", got, tt.msg)
			}
			if (fd != nil) != (sent != nil) {
				t.Fatalf("Recv fd = %v, want one: %v", fd, sent != nil)
			}
			if fd != nil {
				defer fd.Close()
				assertSameFile(t, fd, sent)
			}
		})
	}
}

func assertSameFile(tb testing.TB, got, want *os.File) {
	tb.Helper()
	gi, err := got.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	wi, err := want.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	if !os.SameFile(gi, wi) {
		tb.Errorf("received descriptor is not the sent file")
	}
}

func TestConnSendErrors(t *testing.T) {
	_, w := pipe(t)
	tests := map[string]struct {
		msg     Message
		fd      *os.File
		wantErr error
	}{
		"add without fd":   {msg: AddWorkload{Workload: Workload{UID: "u"}}, wantErr: ErrMalformed},
		"hello with fd":    {msg: Hello{Version: 1}, fd: w, wantErr: ErrMalformed},
		"ack with fd":      {msg: Ack{}, fd: w, wantErr: ErrMalformed},
		"invalid message":  {msg: RemoveWorkload{}, wantErr: ErrMalformed},
		"oversize message": {msg: Ack{Error: strings.Repeat("e", MaxMessageSize)}, wantErr: ErrTooLarge},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			a, raw := connPair(t)
			if err := a.Send(tt.msg, tt.fd); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Send(%.60v) = %v, want %v", tt.msg, err, tt.wantErr)
			}
			// Nothing reached the peer.
			raw.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := raw.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("peer read = %d, %v; want a timeout", n, err)
			}
		})
	}
}

func TestConnRecvRejects(t *testing.T) {
	hello := `{"type":"hello","version":1}`
	add := `{"type":"addWorkload","workload":{"uid":"u"}}`
	tests := map[string]struct {
		packet  string
		fds     int
		wantErr error
		wantMsg string
	}{
		"garbage":          {packet: "\x00\x01garbage", wantErr: ErrMalformed},
		"garbage with fd":  {packet: "garbage", fds: 1, wantErr: ErrMalformed},
		"unknown type":     {packet: `{"type":"bogus"}`, fds: 1, wantErr: ErrMalformed, wantMsg: "unknown type"},
		"hello with fd":    {packet: hello, fds: 1, wantErr: ErrMalformed, wantMsg: "unexpected descriptors"},
		"ack with two fds": {packet: `{"type":"ack"}`, fds: 2, wantErr: ErrMalformed},
		"add without fd":   {packet: add, wantErr: ErrMalformed, wantMsg: "0 descriptors, want 1"},
		"add with two fds": {packet: add, fds: 2, wantErr: ErrMalformed, wantMsg: "2 descriptors, want 1"},
		"add with many fds": {
			packet: add, fds: maxRecvFDs + 3, wantErr: ErrMalformed, wantMsg: "more than",
		},
		"oversize":         {packet: `{"type":"ack","error":"` + strings.Repeat("x", MaxMessageSize) + `"}`, wantErr: ErrTooLarge},
		"oversize with fd": {packet: strings.Repeat(" ", MaxMessageSize+1), fds: 1, wantErr: ErrTooLarge},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			a, raw := connPair(t)
			r, w := pipe(t)
			var oob []byte
			if tt.fds > 0 {
				fds := make([]int, tt.fds)
				for i := range fds {
					fds[i] = int(w.Fd())
				}
				oob = syscall.UnixRights(fds...)
			}
			if _, _, err := raw.WriteMsgUnix([]byte(tt.packet), oob, nil); err != nil {
				t.Fatalf("write packet: %v", err)
			}
			m, fd, err := a.Recv()
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Recv() = %#v, %v, %v; want error %v containing %q", m, fd, err, tt.wantErr, tt.wantMsg)
			}
			if m != nil || fd != nil {
				t.Errorf("Recv() = %#v, %v with an error, want nil, nil", m, fd)
			}
			w.Close()
			assertAllClosed(t, r)

			// The stream stays framed: the next packet is read whole.
			if _, err := raw.Write([]byte(`{"type":"ack"}`)); err != nil {
				t.Fatal(err)
			}
			if m, _, err := a.Recv(); err != nil || m != Message(Ack{}) {
				t.Errorf("Recv() after the bad packet = %#v, %v; want Ack{}", m, err)
			}
		})
	}
}

func TestConnRecvEOF(t *testing.T) {
	a, raw := connPair(t)
	raw.Close()
	if m, fd, err := a.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv() after peer close = %#v, %v, %v; want io.EOF", m, fd, err)
	}
}

func TestDial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	srv, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	s := NewConn(srv)
	defer s.Close()
	if err := s.Send(Hello{Version: Version}, nil); err != nil {
		t.Fatal(err)
	}
	if m, _, err := c.Recv(); err != nil || m != Message(Hello{Version: Version}) {
		t.Errorf("Recv() = %#v, %v; want Hello", m, err)
	}
	if _, err := Dial(ctx, path+".missing"); err == nil || !strings.HasPrefix(err.Error(), "dial ") {
		t.Errorf("Dial(missing) = %v, want a dial error", err)
	}
}
