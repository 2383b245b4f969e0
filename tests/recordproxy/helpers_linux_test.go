package recordproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	inpodv1 "github.com/weftmesh/weft/api/inpod/v1"
	"github.com/weftmesh/weft/daemon/handoff"
)

const testTimeout = 10 * time.Second

// requirePrivileged skips tb without root, or fails it when CI demands the
// privileged tests (WEFT_REQUIRE_PRIVILEGED=1): a skip must not look like a
// pass.
func requirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WEFT_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatal("WEFT_REQUIRE_PRIVILEGED=1 but not running as root")
	}
	tb.Skip("needs root (CAP_SYS_ADMIN for setns, CAP_NET_ADMIN for SO_MARK)")
}

// newNetns returns a new network namespace with lo up, held only by the
// returned file, which is closed after the test. The namespace is
// anonymous (never mounted under /run/netns), so the kernel frees it with
// the last descriptor: a killed test run leaves nothing behind to reap.
func newNetns(tb testing.TB) *os.File {
	tb.Helper()
	requirePrivileged(tb)
	type result struct {
		f   *os.File
		err error
	}
	res := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, now in the new netns, dies with
		// this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			res <- result{err: fmt.Errorf("unshare netns: %w", err)}
			return
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			res <- result{err: err}
			return
		}
		if err := setLoopbackUp(); err != nil {
			f.Close()
			res <- result{err: err}
			return
		}
		res <- result{f: f}
	}()
	r := <-res
	if r.err != nil {
		tb.Fatalf("create netns: %v", r.err)
	}
	tb.Cleanup(func() { r.f.Close() })
	return r.f
}

// setLoopbackUp brings lo up in the calling thread's netns.
func setLoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("create socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

func mustCookie(tb testing.TB, ns *os.File) uint64 {
	tb.Helper()
	c, err := netnsCookie(ns)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// dialIn connects to addr from inside ns, unmarked, as a pod's app would.
func dialIn(ns *os.File, addr string) (*net.TCPConn, error) {
	var c *net.TCPConn
	err := inNetns(ns, func() error {
		d := net.Dialer{Timeout: testTimeout}
		d.SetMultipathTCP(false)
		nc, err := d.Dial("tcp4", addr)
		if err != nil {
			return err
		}
		c = nc.(*net.TCPConn)
		return nil
	})
	return c, err
}

func mustDialIn(tb testing.TB, ns *os.File, addr string) *net.TCPConn {
	tb.Helper()
	c, err := dialIn(ns, addr)
	if err != nil {
		tb.Fatalf("dial %s in pod netns: %v", addr, err)
	}
	tb.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return c
}

// assertRefused checks that nothing listens on addr in ns.
func assertRefused(tb testing.TB, ns *os.File, addr string) {
	tb.Helper()
	c, err := dialIn(ns, addr)
	if err == nil {
		c.Close()
		tb.Errorf("dial %s in pod netns succeeded, want connection refused", addr)
		return
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		tb.Errorf("dial %s in pod netns = %v, want connection refused", addr, err)
	}
}

// echoServer is an app in a pod netns: it answers each line with
// "echo: <line>" and remembers the peers it accepted.
type echoServer struct {
	ln    *net.TCPListener
	addr  netip.AddrPort
	peers chan netip.AddrPort
}

func startEcho(tb testing.TB, ns *os.File, addr string) *echoServer {
	tb.Helper()
	var ln *net.TCPListener
	err := inNetns(ns, func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		l, err := lc.Listen(context.Background(), "tcp4", addr)
		if err != nil {
			return err
		}
		ln = l.(*net.TCPListener)
		return nil
	})
	if err != nil {
		tb.Fatalf("listen on %s in pod netns: %v", addr, err)
	}
	e := &echoServer{ln: ln, addr: addrPort(ln.Addr()), peers: make(chan netip.AddrPort, 16)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			e.peers <- addrPort(c.RemoteAddr())
			wg.Go(func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, "echo: "+line); err != nil {
						return
					}
				}
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return e
}

// roundTrip sends line on c and checks the echo.
func roundTrip(tb testing.TB, c *net.TCPConn, r *bufio.Reader, line string) {
	tb.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		tb.Fatalf("write %q: %v", line, err)
	}
	got, err := r.ReadString('\n')
	if want := "echo: " + line + "\n"; err != nil || got != want {
		tb.Fatalf("read = %q, %v; want %q", got, err, want)
	}
}

// harness is an agent side (handoff.Server with an enrolled-pod set) and a
// record file, for recording proxies to connect to.
type harness struct {
	tb      testing.TB
	log     *slog.Logger
	socket  string
	records string
	srv     *handoff.Server
	// stopServer stops srv and waits for its Run.
	stopServer func()

	// mu guards enrolled, the snapshot source.
	mu       sync.Mutex
	enrolled []handoff.Enrolled
}

func newHarness(tb testing.TB) *harness {
	tb.Helper()
	// Short: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "wrp")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	h := &harness{
		tb:      tb,
		log:     slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		socket:  filepath.Join(dir, "agent", "proxy.sock"),
		records: filepath.Join(dir, "records.jsonl"),
	}
	h.startServer()
	return h
}

func (h *harness) snapshot() []handoff.Enrolled {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]handoff.Enrolled(nil), h.enrolled...)
}

func (h *harness) setEnrolled(es ...handoff.Enrolled) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.enrolled = es
}

// startServer runs a new agent Server on the socket until h.stopServer or
// the end of the test.
func (h *harness) startServer() {
	h.tb.Helper()
	h.srv = handoff.New(h.socket, h.log, h.snapshot)
	h.stopServer = runUntilCleanup(h.tb, "handoff server", h.srv.Run)
}

// startProxy runs a recording proxy for the harness; stop (also run at
// cleanup) stops it and waits.
func (h *harness) startProxy(edit func(*Config)) (*Proxy, func()) {
	h.tb.Helper()
	cfg := Config{Socket: h.socket, RecordFile: h.records}
	if edit != nil {
		edit(&cfg)
	}
	p := New(cfg, h.log)
	return p, runUntilCleanup(h.tb, "record proxy", p.Run)
}

func runUntilCleanup(tb testing.TB, what string, run func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				tb.Errorf("%s Run() = %v, want nil", what, err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

func (h *harness) waitConnected() {
	h.tb.Helper()
	if err := h.srv.WaitConnected(testCtx(h.tb)); err != nil {
		h.tb.Fatal(err)
	}
}

// add enrolls e (snapshot set first, then Add, as the agent does).
func (h *harness) add(e handoff.Enrolled) error {
	h.mu.Lock()
	kept := h.enrolled[:0:0]
	for _, x := range h.enrolled {
		if x.Workload.UID != e.Workload.UID {
			kept = append(kept, x)
		}
	}
	h.enrolled = append(kept, e)
	h.mu.Unlock()
	return h.srv.Add(testCtx(h.tb), e)
}

func (h *harness) mustAdd(e handoff.Enrolled) {
	h.tb.Helper()
	if err := h.add(e); err != nil {
		h.tb.Fatalf("Add(%s): %v", e.Workload.UID, err)
	}
}

func (h *harness) mustRemove(uid string, drain bool) {
	h.tb.Helper()
	h.mu.Lock()
	kept := h.enrolled[:0:0]
	for _, x := range h.enrolled {
		if x.Workload.UID != uid {
			kept = append(kept, x)
		}
	}
	h.enrolled = kept
	h.mu.Unlock()
	if err := h.srv.Remove(testCtx(h.tb), uid, drain); err != nil {
		h.tb.Fatalf("Remove(%s, %v): %v", uid, drain, err)
	}
}

// waitRecords waits until the record file holds n records and returns them.
func (h *harness) waitRecords(n int) []Record {
	h.tb.Helper()
	var recs []Record
	waitFor(h.tb, fmt.Sprintf("%d records", n), func() bool {
		var err error
		recs, err = ReadRecords(h.records)
		if err != nil {
			h.tb.Fatal(err)
		}
		return len(recs) >= n
	})
	if len(recs) != n {
		h.tb.Fatalf("got %d records, want %d: %+v", len(recs), n, recs)
	}
	return recs
}

func enrolledPod(uid string, ns *os.File) handoff.Enrolled {
	return handoff.Enrolled{
		Workload: inpodv1.Workload{UID: uid, Namespace: "test", Name: "pod-" + uid, ServiceAccount: "sa", Node: "node-1"},
		Netns:    ns,
	}
}

func uids(ws []inpodv1.Workload) string {
	var s []string
	for _, w := range ws {
		s = append(s, w.UID)
	}
	return strings.Join(s, ",")
}

func waitPods(tb testing.TB, p *Proxy, want string) {
	tb.Helper()
	waitFor(tb, "proxy pods "+want, func() bool { return uids(p.Pods()) == want })
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
