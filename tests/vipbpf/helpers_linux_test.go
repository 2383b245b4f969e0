package vipbpf

// Test harness, trimmed from bpf/redirect's (whose helpers are _test.go-only):
// named netns, a test cgroup, and child processes started in that cgroup
// inside a netns. Cgroup programs act on sockets by the cgroup of the process
// that created them, so every socket that must meet the programs (the app's,
// and the stand-in proxy's upstream dial) is created by such a child.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/weftmesh/weft/internal/testutil"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/bpf/redirect"
)

// Every host object a test creates is named wvt<pid>-…, so a later run can
// reap what a killed run left behind.
var names = func() *testutil.Names {
	n := testutil.NewNames("wvt")
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
	if err := redirect.InNetnsPath(ns.path)(fn); err != nil {
		tb.Fatalf("in netns %s: %v", ns.name, err)
	}
}

func (ns netNS) cookie(tb testing.TB) uint64 {
	tb.Helper()
	c, err := redirect.NetnsCookie(redirect.InNetnsPath(ns.path))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// newCgroup creates a cgroup under the cgroup2 mount (never the root
// itself), removed at Cleanup.
func newCgroup(tb testing.TB) string {
	tb.Helper()
	root, err := redirect.Cgroup2Root()
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

// The child is this test binary re-executed with envChild set, started in a
// test cgroup (clone3 CLONE_INTO_CGROUP) and entering a netns itself. It
// reads childReq lines on stdin and answers childResp lines on stdout.
const (
	envChild      = "WEFT_VIPBPF_TEST_CHILD"
	envChildNetns = "WEFT_VIPBPF_TEST_NETNS"
	childFDSock   = 3 // ExtraFiles[0]: where "dialfd" sends connected sockets
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(childMain())
	}
	// Warm up the runtime's poller so its descriptors are in the baseline.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	before := openFDs()
	code := m.Run()
	if after := openFDs(); code == 0 && len(after) > len(before) {
		var leaked []string
		for _, fd := range after {
			if !slices.Contains(before, fd) {
				leaked = append(leaked, fd)
			}
		}
		fmt.Fprintf(os.Stderr, "leaked file descriptors: %d open before the tests, %d after: %v\n", len(before), len(after), leaked)
		code = 1
	}
	os.Exit(code)
}

func openFDs() []string {
	entries, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"->"+target)
	}
	return out
}

type childReq struct {
	// Op is "dial" (connect, read one line, close) or "dialfd" (connect,
	// pass the socket to the parent over childFDSock).
	Op   string
	Addr string // ip:port, IPv4
	Mark int    // SO_MARK, if nonzero
}

type childResp struct {
	Peer string // getpeername after connect
	Line string // first line received ("dial")
	Err  string
}

// childMain runs in the child: everything on one locked thread in the netns.
func childMain() int {
	runtime.LockOSThread()
	f, err := os.Open(os.Getenv(envChildNetns))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		fmt.Fprintln(os.Stderr, "setns:", err)
		return 1
	}
	f.Close()
	sc := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		var req childReq
		var resp childResp
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp.Err = err.Error()
		} else if err := childDo(req, &resp); err != nil {
			resp.Err = err.Error()
		}
		enc.Encode(resp)
	}
	return 0
}

func childDo(req childReq, resp *childResp) error {
	ap, err := netip.ParseAddrPort(req.Addr)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if req.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, req.Mark); err != nil {
			return fmt.Errorf("set SO_MARK: %w", err)
		}
	}
	tv := unix.Timeval{Sec: 5}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		return fmt.Errorf("connect %s: %w", ap, err)
	}
	if p, err := unix.Getpeername(fd); err == nil {
		if sa, ok := p.(*unix.SockaddrInet4); ok {
			resp.Peer = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
		}
	}
	switch req.Op {
	case "dial":
		resp.Line, err = readLine(fd)
		return err
	case "dialfd":
		if err := unix.Sendmsg(childFDSock, []byte{0}, unix.UnixRights(fd), nil, 0); err != nil {
			return fmt.Errorf("pass socket to parent: %w", err)
		}
		return nil
	}
	return fmt.Errorf("unknown op %q", req.Op)
}

func readLine(fd int) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := unix.Read(fd, b)
		if err != nil {
			return string(line), fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return string(line), io.ErrUnexpectedEOF
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
}

// child is the parent's handle on a child process. Its methods are safe for
// concurrent use (one request at a time).
type child struct {
	mu   sync.Mutex // serialises requests
	in   io.WriteCloser
	out  *json.Decoder
	sock int // parent end of the socketpair for "dialfd"
}

// startChild starts a child process in cgroup, inside ns; it is stopped at
// Cleanup (before the cgroup is removed).
func startChild(tb testing.TB, ns netNS, cgroup string) *child {
	tb.Helper()
	cg, err := os.Open(cgroup)
	if err != nil {
		tb.Fatal(err)
	}
	defer cg.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("create socketpair: %v", err)
	}
	childEnd := os.NewFile(uintptr(pair[1]), "child-sock")
	defer childEnd.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envChildNetns+"="+ns.path)
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{childEnd} // fd 3 = childFDSock
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	c := &child{sock: pair[0]}
	if c.in, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	c.out = json.NewDecoder(out)
	if err := cmd.Start(); err != nil {
		unix.Close(c.sock)
		tb.Fatalf("start child in cgroup %s: %v", cgroup, err)
	}
	tb.Cleanup(func() {
		c.in.Close()
		if err := cmd.Wait(); err != nil {
			tb.Errorf("child: %v", err)
		}
		unix.Close(c.sock)
	})
	return c
}

func (c *child) request(req childReq) (childResp, error) {
	b, _ := json.Marshal(req)
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		return childResp{}, fmt.Errorf("send %+v to child: %w", req, err)
	}
	var resp childResp
	if err := c.out.Decode(&resp); err != nil {
		return childResp{}, fmt.Errorf("read child answer to %+v: %w", req, err)
	}
	if resp.Err != "" {
		return resp, fmt.Errorf("child %+v: %s", req, resp.Err)
	}
	return resp, nil
}

// dial has the child connect to addr and returns the first line it read.
func (c *child) dial(tb testing.TB, addr netip.AddrPort) childResp {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, err := c.request(childReq{Op: "dial", Addr: addr.String()})
	if err != nil {
		tb.Fatal(err)
	}
	return resp
}

// dialFD has the child connect to addr from a socket with the given mark
// and returns that socket: a connection created in the child's cgroup and
// netns, for the parent to use.
func (c *child) dialFD(addr netip.AddrPort, mark int) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.request(childReq{Op: "dialfd", Addr: addr.String(), Mark: mark}); err != nil {
		return nil, err
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(c.sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("receive socket from child: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("receive socket from child: bad control message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, errors.Join(errors.New("receive socket from child: no descriptor"), err)
	}
	f := os.NewFile(uintptr(fds[0]), "upstream")
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("wrap socket from child: %w", err)
	}
	return conn, nil
}
