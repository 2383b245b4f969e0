package handoff

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
)

// testTimeout bounds every wait of these tests.
const testTimeout = 10 * time.Second

// pods is a snapshot source that tests change between calls.
type pods struct {
	mu   sync.Mutex
	list []Enrolled
}

func (p *pods) set(list ...Enrolled) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = list
}

func (p *pods) snapshot() []Enrolled {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Enrolled(nil), p.list...)
}

// startServer runs a Server on a socket in a fresh directory until the test
// ends, and checks that Run then returns nil.
func startServer(tb testing.TB, snapshot func() []Enrolled, opts ...func(*Server)) (*Server, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "run", "proxy.sock")
	s := New(path, slog.New(slog.NewTextHandler(tb.Output(), nil)), snapshot)
	for _, o := range opts {
		o(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			tb.Errorf("Run() = %v, want nil", err)
		}
	})
	waitFor(tb, "socket to appear", func() bool {
		fi, err := os.Lstat(path)
		return err == nil && fi.Mode().Type() == fs.ModeSocket
	})
	return s, path
}

// waitFor polls cond until it holds or the test times out.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(testTimeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// fakeProxy is the proxy end of one connection, driven by the test.
type fakeProxy struct {
	tb testing.TB
	c  *inpodv1.Conn
}

func dialProxy(tb testing.TB, path string) *fakeProxy {
	tb.Helper()
	c, err := inpodv1.Dial(testCtx(tb), path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &fakeProxy{tb: tb, c: c}
}

// recv returns the next message; a netns file that came with it is closed
// after the test.
func (p *fakeProxy) recv() (inpodv1.Message, *os.File) {
	p.tb.Helper()
	p.c.SetReadDeadline(time.Now().Add(testTimeout))
	m, fd, err := p.c.Recv()
	if err != nil {
		p.tb.Fatalf("proxy Recv: %v", err)
	}
	if fd != nil {
		p.tb.Cleanup(func() { fd.Close() })
	}
	return m, fd
}

// expect receives the next message and checks it is want.
func (p *fakeProxy) expect(want inpodv1.Message) *os.File {
	p.tb.Helper()
	got, fd := p.recv()
	if !reflect.DeepEqual(got, want) {
		p.tb.Fatalf("proxy got %#v, want %#v", got, want)
	}
	return fd
}

// expectNothing checks that no message arrives for a while: the server
// waits for the previous Ack, or sends elsewhere.
func (p *fakeProxy) expectNothing() {
	p.tb.Helper()
	p.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if m, _, err := p.c.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		p.tb.Fatalf("proxy Recv = %#v, %v; want nothing", m, err)
	}
}

func (p *fakeProxy) ack(errText string) {
	p.tb.Helper()
	if err := p.c.Send(inpodv1.Ack{Error: errText}, nil); err != nil {
		p.tb.Fatalf("proxy send ack: %v", err)
	}
}

// sync answers Hello and the snapshot, checking that it holds want.
func (p *fakeProxy) sync(want ...Enrolled) {
	p.tb.Helper()
	p.expect(inpodv1.Hello{Version: inpodv1.Version})
	p.ack("")
	for _, e := range want {
		fd := p.expect(inpodv1.AddWorkload{Workload: e.Workload})
		assertSameFile(p.tb, fd, e.Netns)
		p.ack("")
	}
	p.expect(inpodv1.SnapshotSent{})
	p.ack("")
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
		tb.Errorf("received netns %s is not the enrolled file %s", got.Name(), want.Name())
	}
}

// enrolled returns a pod whose "netns" is the write end of a pipe, and the
// pipe's read end, which sees EOF once every copy of the write end is
// closed.
func enrolled(tb testing.TB, uid string) (Enrolled, *os.File) {
	tb.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close(); w.Close() })
	return Enrolled{Workload: inpodv1.Workload{UID: uid, Namespace: "ns", Name: "pod-" + uid}, Netns: w}, r
}

// async runs f on a goroutine; the returned channel yields its result.
func async(f func() error) <-chan error {
	c := make(chan error, 1)
	go func() { c <- f() }()
	return c
}

func result(tb testing.TB, c <-chan error) error {
	tb.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(testTimeout):
		tb.Fatal("timed out waiting for a result")
		return nil
	}
}

func assertPending(tb testing.TB, c <-chan error) {
	tb.Helper()
	select {
	case err := <-c:
		tb.Fatalf("call returned %v before the proxy acknowledged", err)
	default:
	}
}

func TestSnapshotOnConnect(t *testing.T) {
	a, _ := enrolled(t, "a")
	b, _ := enrolled(t, "b")
	b.Workload.NetnsCookie = 77
	var src pods
	src.set(a, b)
	s, path := startServer(t, src.snapshot)
	if s.Connected() {
		t.Fatal("Connected() = true before any proxy")
	}

	p := dialProxy(t, path)
	p.expect(inpodv1.Hello{Version: inpodv1.Version})
	p.ack("")
	for _, e := range []Enrolled{a, b} {
		fd := p.expect(inpodv1.AddWorkload{Workload: e.Workload})
		assertSameFile(t, fd, e.Netns)
		p.ack("")
	}
	p.expect(inpodv1.SnapshotSent{})
	if s.Connected() {
		t.Error("Connected() = true before the snapshot was acknowledged")
	}
	p.ack("")
	if err := s.WaitConnected(testCtx(t)); err != nil {
		t.Fatalf("WaitConnected: %v", err)
	}
	got := s.Stats()
	want := Stats{Connections: 1, Accepted: 1, Synced: 1, Adds: 2}
	if got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestAddRemoveAckedInOrder(t *testing.T) {
	s, path := startServer(t, nil)
	p := dialProxy(t, path)
	p.sync()
	ctx := testCtx(t)
	a, _ := enrolled(t, "a")
	b, _ := enrolled(t, "b")

	add := async(func() error { return s.Add(ctx, a) })
	fd := p.expect(inpodv1.AddWorkload{Workload: a.Workload})
	assertSameFile(t, fd, a.Netns)
	assertPending(t, add)
	p.ack("")
	if err := result(t, add); err != nil {
		t.Fatalf("Add(a) = %v", err)
	}

	// A second call waits while the first is unacknowledged.
	addB := async(func() error { return s.Add(ctx, b) })
	p.expect(inpodv1.AddWorkload{Workload: b.Workload})
	rm := async(func() error { return s.Remove(ctx, "a", true) })
	p.expectNothing()
	assertPending(t, addB)
	p.ack("")
	if err := result(t, addB); err != nil {
		t.Fatalf("Add(b) = %v", err)
	}
	p.expect(inpodv1.RemoveWorkload{UID: "a", Drain: true})
	assertPending(t, rm)
	p.ack("")
	if err := result(t, rm); err != nil {
		t.Fatalf("Remove(a) = %v", err)
	}

	rm = async(func() error { return s.Remove(ctx, "b", false) })
	p.expect(inpodv1.RemoveWorkload{UID: "b", Drain: false})
	p.ack("")
	if err := result(t, rm); err != nil {
		t.Fatalf("Remove(b) = %v", err)
	}
	got := s.Stats()
	want := Stats{Connections: 1, Accepted: 1, Synced: 1, Adds: 2, Removes: 2}
	if got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestNewestProxyGetsAddsRemovesGoToAll(t *testing.T) {
	a, _ := enrolled(t, "a")
	var src pods
	src.set(a)
	s, path := startServer(t, src.snapshot)
	ctx := testCtx(t)

	old := dialProxy(t, path)
	old.sync(a)
	// An upgrade: the new proxy connects while the old one still serves.
	upgraded := dialProxy(t, path)
	upgraded.sync(a)
	waitFor(t, "two connections", func() bool { return s.Stats().Connections == 2 })

	b, _ := enrolled(t, "b")
	src.set(a, b)
	add := async(func() error { return s.Add(ctx, b) })
	upgraded.expect(inpodv1.AddWorkload{Workload: b.Workload})
	upgraded.ack("")
	if err := result(t, add); err != nil {
		t.Fatalf("Add(b) = %v", err)
	}
	old.expectNothing()

	src.set(b)
	rm := async(func() error { return s.Remove(ctx, "a", true) })
	old.expect(inpodv1.RemoveWorkload{UID: "a", Drain: true})
	upgraded.expect(inpodv1.RemoveWorkload{UID: "a", Drain: true})
	upgraded.ack("")
	assertPending(t, rm) // still waiting for the old proxy
	old.ack("")
	if err := result(t, rm); err != nil {
		t.Fatalf("Remove(a) = %v", err)
	}

	// The upgraded proxy goes away: the old one is active again.
	upgraded.c.Close()
	waitFor(t, "one connection", func() bool { return s.Stats().Connections == 1 })
	c, _ := enrolled(t, "c")
	add = async(func() error { return s.Add(ctx, c) })
	old.expect(inpodv1.AddWorkload{Workload: c.Workload})
	old.ack("")
	if err := result(t, add); err != nil {
		t.Fatalf("Add(c) = %v", err)
	}
}

func TestReconnectGetsSnapshot(t *testing.T) {
	a, _ := enrolled(t, "a")
	var src pods
	src.set(a)
	s, path := startServer(t, src.snapshot)
	ctx := testCtx(t)

	p := dialProxy(t, path)
	p.sync(a)
	p.c.Close()
	waitFor(t, "the proxy to be gone", func() bool { return !s.Connected() && s.Stats().Connections == 0 })

	// Enrolled while no proxy is connected: nobody to tell now...
	b, _ := enrolled(t, "b")
	src.set(a, b)
	if err := s.Add(ctx, b); !errors.Is(err, ErrNoProxy) {
		t.Fatalf("Add(b) without proxy = %v, want ErrNoProxy", err)
	}
	// ...but the next proxy gets it in its snapshot.
	p = dialProxy(t, path)
	p.sync(a, b)
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Stats(); got.Accepted != 2 || got.Synced != 2 || got.Failed != 0 {
		t.Errorf("Stats() = %+v, want 2 accepted, 2 synced, 0 failed", got)
	}
}

func TestErrNoProxy(t *testing.T) {
	s, _ := startServer(t, nil)
	a, _ := enrolled(t, "a")
	ctx := testCtx(t)
	if err := s.Add(ctx, a); !errors.Is(err, ErrNoProxy) {
		t.Errorf("Add() = %v, want ErrNoProxy", err)
	}
	if err := s.Remove(ctx, "a", false); !errors.Is(err, ErrNoProxy) {
		t.Errorf("Remove() = %v, want ErrNoProxy", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := s.WaitConnected(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitConnected() = %v, want DeadlineExceeded", err)
	}
}

func TestRefusedAck(t *testing.T) {
	a, _ := enrolled(t, "a")
	var src pods
	src.set(a)
	s, path := startServer(t, src.snapshot)
	ctx := testCtx(t)

	p := dialProxy(t, path)
	p.expect(inpodv1.Hello{Version: inpodv1.Version})
	p.ack("")
	p.recv()
	p.ack("snapshot pod refused") // a refused snapshot pod does not end the snapshot
	p.expect(inpodv1.SnapshotSent{})
	p.ack("")
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}

	b, _ := enrolled(t, "b")
	add := async(func() error { return s.Add(ctx, b) })
	p.recv()
	p.ack("open listeners: address already in use")
	err := result(t, add)
	var refused *AckError
	if !errors.As(err, &refused) || refused.Reason != "open listeners: address already in use" {
		t.Fatalf("Add() = %v, want an *AckError with the proxy's reason", err)
	}
	if want := "add workload b: proxy refused: open listeners: address already in use"; err.Error() != want {
		t.Errorf("Add() error = %q, want %q", err, want)
	}

	// The connection stays usable.
	rm := async(func() error { return s.Remove(ctx, "b", true) })
	p.expect(inpodv1.RemoveWorkload{UID: "b", Drain: true})
	p.ack("no such pod")
	if err := result(t, rm); !errors.As(err, &refused) {
		t.Errorf("Remove() = %v, want an *AckError", err)
	}
	if got := s.Stats(); got.Refused != 3 {
		t.Errorf("Stats().Refused = %d, want 3", got.Refused)
	}
}

func TestHelloRefused(t *testing.T) {
	s, path := startServer(t, nil)
	p := dialProxy(t, path)
	p.expect(inpodv1.Hello{Version: inpodv1.Version})
	p.ack("unsupported version 1, want 2")
	p.c.Close()
	waitFor(t, "the connection to be dropped", func() bool { return s.Stats().Connections == 0 })
	if s.Connected() {
		t.Error("Connected() = true after the proxy refused Hello")
	}
	if got := s.Stats(); got.Refused != 1 || got.Synced != 0 {
		t.Errorf("Stats() = %+v, want 1 refused, 0 synced", got)
	}
}

func TestAckTimeoutAndCallerCancel(t *testing.T) {
	s, path := startServer(t, nil, func(s *Server) { s.ackTimeout = 300 * time.Millisecond })
	p := dialProxy(t, path)
	p.sync()
	a, _ := enrolled(t, "a")

	ctx, cancel := context.WithCancel(testCtx(t))
	add := async(func() error { return s.Add(ctx, a) })
	p.expect(inpodv1.AddWorkload{Workload: a.Workload})
	cancel()
	if err := result(t, add); !errors.Is(err, context.Canceled) {
		t.Fatalf("Add() with canceled ctx = %v, want Canceled", err)
	}
	// The proxy never answers: the server gives up on it.
	waitFor(t, "the silent proxy to be dropped", func() bool { return s.Stats().Connections == 0 })
	if got := s.Stats(); got.Failed != 1 {
		t.Errorf("Stats().Failed = %d, want 1", got.Failed)
	}
}

func TestProxyLostMidRequest(t *testing.T) {
	s, path := startServer(t, nil)
	p := dialProxy(t, path)
	p.sync()
	a, _ := enrolled(t, "a")
	add := async(func() error { return s.Add(testCtx(t), a) })
	p.recv()
	p.c.Close()
	if err := result(t, add); !errors.Is(err, ErrProxyLost) {
		t.Errorf("Add() = %v, want ErrProxyLost", err)
	}
}

func TestProtocolViolations(t *testing.T) {
	tests := map[string]struct {
		send inpodv1.Message
	}{
		"unsolicited ack": {send: inpodv1.Ack{}},
		"proxy hello":     {send: inpodv1.Hello{Version: 1}},
		"proxy remove":    {send: inpodv1.RemoveWorkload{UID: "x"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s, path := startServer(t, nil)
			p := dialProxy(t, path)
			p.sync()
			if err := p.c.Send(tt.send, nil); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the connection to be dropped", func() bool { return s.Stats().Connections == 0 })
			p.c.SetReadDeadline(time.Now().Add(testTimeout))
			if m, _, err := p.c.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("proxy Recv() = %#v, %v; want EOF", m, err)
			}
			if got := s.Stats(); got.Failed != 1 {
				t.Errorf("Stats().Failed = %d, want 1", got.Failed)
			}
		})
	}
}

func TestCallerFilesStayOpenDuplicatesClosed(t *testing.T) {
	a, aRead := enrolled(t, "a")
	b, bRead := enrolled(t, "b")
	var src pods
	src.set(a)
	s, path := startServer(t, src.snapshot)
	ctx := testCtx(t)
	p := dialProxy(t, path)
	p.expect(inpodv1.Hello{Version: inpodv1.Version})
	p.ack("")
	aFD := p.expect(inpodv1.AddWorkload{Workload: a.Workload})
	p.ack("")
	p.expect(inpodv1.SnapshotSent{})
	p.ack("")
	add := async(func() error { return s.Add(ctx, b) })
	bFD := p.expect(inpodv1.AddWorkload{Workload: b.Workload})
	p.ack("")
	if err := result(t, add); err != nil {
		t.Fatal(err)
	}

	for _, e := range []Enrolled{a, b} {
		if _, err := e.Netns.Stat(); err != nil {
			t.Errorf("caller's netns file of %s: %v, want it open", e.Workload.UID, err)
		}
	}
	// Once the caller and the proxy close theirs, no copy is left: the
	// server closed its duplicates.
	for _, f := range []*os.File{a.Netns, b.Netns, aFD, bFD} {
		f.Close()
	}
	for uid, r := range map[string]*os.File{"a": aRead, "b": bRead} {
		r.SetReadDeadline(time.Now().Add(testTimeout))
		if n, err := r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("netns of %s: read = %d, %v; want EOF (a duplicate leaked)", uid, n, err)
		}
	}
}

func TestAddRemoveValidation(t *testing.T) {
	s, _ := startServer(t, nil)
	ctx := testCtx(t)
	a, _ := enrolled(t, "a")
	tests := map[string]struct {
		call func() error
		want string
	}{
		"add empty uid": {
			call: func() error { return s.Add(ctx, Enrolled{Netns: a.Netns}) },
			want: "empty workload uid",
		},
		"add nil netns": {
			call: func() error { return s.Add(ctx, Enrolled{Workload: inpodv1.Workload{UID: "a"}}) },
			want: "add workload a: no netns file",
		},
		"remove empty uid": {
			call: func() error { return s.Remove(ctx, "", true) },
			want: "empty uid",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := tt.call()
			if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, ErrNoProxy) {
				t.Errorf("call = %v, want an error containing %q (before any proxy check)", err, tt.want)
			}
		})
	}
}

func TestSocketFile(t *testing.T) {
	t.Run("creates dir and socket with modes", func(t *testing.T) {
		_, path := startServer(t, nil)
		dir, err := os.Stat(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if got := dir.Mode().Perm(); got != 0o750 {
			t.Errorf("socket dir mode = %v, want 0750", got)
		}
		sock, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := sock.Mode().Perm(); got != 0o600 {
			t.Errorf("socket mode = %v, want 0600", got)
		}
	})
	t.Run("replaces a stale socket and removes it on exit", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "proxy.sock")
		stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		stale.SetUnlinkOnClose(false)
		stale.Close()
		s := New(path, slog.New(slog.NewTextHandler(t.Output(), nil)), nil)
		ctx, cancel := context.WithCancel(context.Background())
		errc := async(func() error { return s.Run(ctx) })
		// The stale socket refuses connections until Run replaced it.
		var c *inpodv1.Conn
		waitFor(t, "the server to replace the stale socket", func() bool {
			var err error
			c, err = inpodv1.Dial(ctx, path)
			return err == nil
		})
		t.Cleanup(func() { c.Close() })
		p := &fakeProxy{tb: t, c: c}
		p.sync()
		cancel()
		if err := result(t, errc); err != nil {
			t.Fatalf("Run() = %v, want nil", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket after Run: %v, want it removed", err)
		}
		p.c.SetReadDeadline(time.Now().Add(testTimeout))
		// EOF, or ECONNRESET when the server closed before reading the
		// last Ack.
		if _, _, err := p.c.Recv(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("proxy Recv() after Run = %v, want EOF or ECONNRESET", err)
		}
	})
	t.Run("leaves a socket that replaced its own", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "proxy.sock")
		log := slog.New(slog.NewTextHandler(t.Output(), nil))
		oldCtx, oldCancel := context.WithCancel(context.Background())
		defer oldCancel()
		oldRun := async(func() error { return New(path, log, nil).Run(oldCtx) })
		var first os.FileInfo
		waitFor(t, "the first socket", func() bool {
			var err error
			first, err = os.Lstat(path)
			return err == nil
		})
		// An upgrade: a new agent takes the path over, then the old one exits.
		newer := New(path, log, nil)
		newCtx, newCancel := context.WithCancel(context.Background())
		newRun := async(func() error { return newer.Run(newCtx) })
		defer func() {
			newCancel()
			if err := result(t, newRun); err != nil {
				t.Errorf("newer Run() = %v", err)
			}
		}()
		waitFor(t, "the newer socket", func() bool {
			fi, err := os.Lstat(path)
			return err == nil && !os.SameFile(fi, first)
		})
		oldCancel()
		if err := result(t, oldRun); err != nil {
			t.Fatalf("old Run() = %v", err)
		}
		p := dialProxy(t, path)
		p.sync()
		if err := newer.WaitConnected(testCtx(t)); err != nil {
			t.Errorf("the newer server lost its socket: %v", err)
		}
	})
	t.Run("refuses to remove a non-socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "proxy.sock")
		if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := New(path, slog.New(slog.NewTextHandler(t.Output(), nil)), nil)
		err := s.Run(testCtx(t))
		if err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Run() = %v, want a not-a-socket error", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "data" {
			t.Errorf("file at socket path = %q, want it untouched", b)
		}
	})
}
