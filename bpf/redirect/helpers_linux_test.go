package redirect

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/weftmesh/weft/internal/testutil"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Every host object a test creates is named wbt<pid>-…, so a later run can
// reap what a killed run left behind.
var names = func() *testutil.Names {
	n := testutil.NewNames("wbt")
	// Pin dirs of killed runs, too.
	n.ReapExtra = func(stale func(string) bool) {
		if entries, err := os.ReadDir("/sys/fs/bpf"); err == nil {
			for _, e := range entries {
				if e.IsDir() && stale(e.Name()) {
					Cleanup(filepath.Join("/sys/fs/bpf", e.Name()))
				}
			}
		}
	}
	return n
}()

func uniqueName(kind string) string                  { return names.Unique(kind) }
func requirePrivileged(tb testing.TB)                { tb.Helper(); names.RequirePrivileged(tb) }
func run(tb testing.TB, name string, args ...string) { tb.Helper(); testutil.Run(tb, name, args...) }

// netNS is a named network namespace created for one test.
type netNS struct {
	name string
	path string
}

func (ns netNS) runner() NetnsRunner { return InNetnsPath(ns.path) }

// newNetNS creates a named netns with lo up, removed at Cleanup.
func newNetNS(tb testing.TB) netNS {
	tb.Helper()
	name := uniqueName("ns")
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return netNS{name: name, path: "/run/netns/" + name}
}

// do runs fn in ns on a locked, discarded thread.
func (ns netNS) do(tb testing.TB, fn func() error) {
	tb.Helper()
	if err := ns.runner()(fn); err != nil {
		tb.Fatalf("in netns %s: %v", ns.name, err)
	}
}

func (ns netNS) cookie(tb testing.TB) uint64 {
	tb.Helper()
	c, err := NetnsCookie(ns.runner())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Addresses of a pair; they exist only inside the test's namespaces.
var (
	nodeIP   = netip.MustParseAddr("10.250.0.1") // gateway, probe source
	podIP    = netip.MustParseAddr("10.250.0.2")
	remoteIP = netip.MustParseAddr("10.250.0.3") // a second node-side address: "another pod"
)

// pair is a "node" and a "pod" netns joined by a veth: pod eth0 has podIP,
// the node end has nodeIP and remoteIP.
type pair struct {
	node, pod netNS
}

func newPair(tb testing.TB) pair {
	tb.Helper()
	p := pair{node: newNetNS(tb), pod: newNetNS(tb)}
	run(tb, "ip", "-n", p.node.name, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", p.pod.name)
	run(tb, "ip", "-n", p.node.name, "addr", "add", nodeIP.String()+"/24", "dev", "veth0")
	run(tb, "ip", "-n", p.node.name, "addr", "add", remoteIP.String()+"/24", "dev", "veth0")
	run(tb, "ip", "-n", p.pod.name, "addr", "add", podIP.String()+"/24", "dev", "eth0")
	run(tb, "ip", "-n", p.node.name, "link", "set", "veth0", "up")
	run(tb, "ip", "-n", p.pod.name, "link", "set", "eth0", "up")
	return p
}

// newCgroup creates a cgroup under the cgroup2 mount (never the root itself).
func newCgroup(tb testing.TB) string {
	tb.Helper()
	root, err := Cgroup2Root()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(root, uniqueName("cg"))
	if err := os.Mkdir(path, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := os.Remove(path); err != nil {
			tb.Errorf("remove test cgroup: %v", err)
		}
	})
	return path
}

// newPinDir returns a fresh directory on a bpffs, removed (with every pin
// in it) at Cleanup. It uses /sys/fs/bpf if that is a bpffs, or mounts a
// private bpffs.
func newPinDir(tb testing.TB) string {
	tb.Helper()
	base := "/sys/fs/bpf"
	var st unix.Statfs_t
	if err := unix.Statfs(base, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		base = tb.TempDir()
		if err := unix.Mount("bpf", base, "bpf", 0, "mode=0700"); err != nil {
			tb.Fatalf("mount bpffs: %v", err)
		}
		tb.Cleanup(func() { unix.Unmount(base, unix.MNT_DETACH) })
	}
	dir := filepath.Join(base, uniqueName("pin"))
	tb.Cleanup(func() {
		if err := Cleanup(dir); err != nil {
			tb.Errorf("cleanup pins: %v", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			tb.Errorf("pin dir %s still exists after Cleanup (err %v)", dir, err)
		}
	})
	return dir
}

func mustLoad(tb testing.TB, opts Options) *Objects {
	tb.Helper()
	o, err := Load(opts)
	if err != nil {
		tb.Fatalf("Load(%+v): %v", opts, err)
	}
	tb.Cleanup(func() { o.Close() })
	return o
}

func mustCounters(tb testing.TB, o *Objects) Counters {
	tb.Helper()
	c, err := o.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// diff returns b - a field by field.
func (b Counters) diff(a Counters) Counters {
	return Counters{
		Redirected:            b.Redirected - a.Redirected,
		SkippedUDP:            b.SkippedUDP - a.SkippedUDP,
		SkippedLoopback:       b.SkippedLoopback - a.SkippedLoopback,
		SkippedSelf:           b.SkippedSelf - a.SkippedSelf,
		SkippedMarked:         b.SkippedMarked - a.SkippedMarked,
		SkippedBoundDev:       b.SkippedBoundDev - a.SkippedBoundDev,
		SkippedIPv6:           b.SkippedIPv6 - a.SkippedIPv6,
		InboundAssigned:       b.InboundAssigned - a.InboundAssigned,
		InboundDropNoListener: b.InboundDropNoListener - a.InboundDropNoListener,
		ProbePass:             b.ProbePass - a.ProbePass,
		Errors:                b.Errors - a.Errors,
	}
}

// serve listens on addr in ns (plain TCP, no MPTCP: ztunnel's sockets are
// plain) and, for each connection, writes banner(conn) as one line, then
// echoes lines. It is closed at Cleanup, or earlier by the caller.
func serve(tb testing.TB, ns netNS, network, addr string, banner func(net.Conn) string) net.Listener {
	tb.Helper()
	var ln net.Listener
	ns.do(tb, func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(context.Background(), network, addr)
		return err
	})
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := fmt.Fprintln(c, banner(c)); err != nil {
					return
				}
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintln(c, sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln
}

func fixed(s string) func(net.Conn) string { return func(net.Conn) string { return s } }

// serveUDP answers each datagram on addr in ns with prefix+datagram.
func serveUDP(tb testing.TB, ns netNS, addr, prefix string) {
	tb.Helper()
	var pc net.PacketConn
	ns.do(tb, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	})
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(prefix), buf[:n]...), from)
		}
	}()
}

// tcpConn is a client connection with line helpers.
type tcpConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *tcpConn) line(tb testing.TB) string {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	s, err := c.r.ReadString('\n')
	if err != nil {
		tb.Fatalf("read from %s: %v", c.RemoteAddr(), err)
	}
	return strings.TrimSuffix(s, "\n")
}

func (c *tcpConn) echo(tb testing.TB, msg string) {
	tb.Helper()
	if _, err := fmt.Fprintln(c, msg); err != nil {
		tb.Fatalf("write to %s: %v", c.RemoteAddr(), err)
	}
	if got := c.line(tb); got != msg {
		tb.Fatalf("echo(%q) = %q, want %q", msg, got, msg)
	}
}

// dialFrom connects from src (a local address of ns; port 0 for any) to dst, creating the
// socket on a thread inside ns.
func dialFrom(ns netNS, src netip.AddrPort, dst netip.AddrPort, timeout time.Duration) (*tcpConn, error) {
	var c net.Conn
	err := ns.runner()(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(src)}
		var err error
		c, err = d.Dial("tcp4", dst.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return &tcpConn{Conn: c, r: bufio.NewReader(c)}, nil
}

func mustDialFrom(tb testing.TB, ns netNS, src netip.AddrPort, dst netip.AddrPort) *tcpConn {
	tb.Helper()
	c, err := dialFrom(ns, src, dst, 5*time.Second)
	if err != nil {
		tb.Fatalf("dial %s from %s: %v", dst, src, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func openDir(tb testing.TB, path string) *os.File {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}
