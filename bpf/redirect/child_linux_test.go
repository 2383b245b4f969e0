package redirect

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The outbound programs act on sockets created by processes in the cgroup
// they are attached to. Tests attach them to a test cgroup (never the root)
// and run the "app" as a child process: this test binary re-executed with
// envChild set, started in the test cgroup (clone3 CLONE_INTO_CGROUP) and
// entering the pod netns itself. It reads childReq lines on stdin and
// answers childResp lines on stdout.
const (
	envChild      = "WEFT_REDIRECT_TEST_CHILD"
	envChildNetns = "WEFT_REDIRECT_TEST_NETNS"
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
		fmt.Fprintf(os.Stderr, "leaked file descriptors: %d open before the tests, %d after: %v\n", len(before), len(after), after)
		code = 1
	}
	os.Exit(code)
}

// openFDs lists this process's open descriptors and what they point to.
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
	Op      string // "dial", "echo", "close"
	ID      string // connection name
	Net     string // "tcp4", "tcp6", "udp4", "mptcp4"
	Addr    string // ip:port; for tcp6 may be [::ffff:a.b.c.d]:port
	Mark    int    // SO_MARK, if nonzero
	BindDev string // SO_BINDTODEVICE, if set
	Msg     string
}

type childResp struct {
	Peer  string // getpeername after connect
	Local string // getsockname after connect
	Line  string // first line received (the server's banner) or the echo
	Err   string
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
	conns := map[string]int{}
	sc := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		var req childReq
		var resp childResp
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp.Err = err.Error()
		} else if err := childDo(conns, req, &resp); err != nil {
			resp.Err = err.Error()
		}
		enc.Encode(resp)
	}
	return 0
}

func childDo(conns map[string]int, req childReq, resp *childResp) error {
	switch req.Op {
	case "dial":
		fd, err := childDial(req, resp)
		if err != nil {
			return err
		}
		conns[req.ID] = fd
		return nil
	case "echo":
		fd, ok := conns[req.ID]
		if !ok {
			return fmt.Errorf("no connection %q", req.ID)
		}
		if _, err := unix.Write(fd, []byte(req.Msg+"\n")); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		line, err := readLine(fd)
		resp.Line = line
		return err
	case "close":
		if fd, ok := conns[req.ID]; ok {
			unix.Close(fd)
			delete(conns, req.ID)
		}
		return nil
	}
	return fmt.Errorf("unknown op %q", req.Op)
}

func childDial(req childReq, resp *childResp) (int, error) {
	ap, err := netip.ParseAddrPort(req.Addr)
	if err != nil {
		return -1, err
	}
	family, typ, proto := unix.AF_INET, unix.SOCK_STREAM, 0
	switch req.Net {
	case "tcp6":
		family = unix.AF_INET6
	case "udp4":
		typ = unix.SOCK_DGRAM
	case "mptcp4":
		proto = unix.IPPROTO_MPTCP
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if req.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, req.Mark); err != nil {
			return -1, fmt.Errorf("set SO_MARK: %w", err)
		}
	}
	if req.BindDev != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, req.BindDev); err != nil {
			return -1, fmt.Errorf("set SO_BINDTODEVICE: %w", err)
		}
	}
	tv := unix.Timeval{Sec: 5}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	if err := unix.Connect(fd, sa); err != nil {
		return -1, fmt.Errorf("connect: %w", err)
	}
	if p, err := unix.Getpeername(fd); err == nil {
		resp.Peer = sockaddrString(p)
	}
	if l, err := unix.Getsockname(fd); err == nil {
		resp.Local = sockaddrString(l)
	}
	if typ == unix.SOCK_DGRAM {
		if _, err := unix.Write(fd, []byte("ping")); err != nil {
			return -1, fmt.Errorf("send: %w", err)
		}
		buf := make([]byte, 1500)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return -1, fmt.Errorf("receive: %w", err)
		}
		resp.Line = string(buf[:n])
	} else {
		if resp.Line, err = readLine(fd); err != nil {
			return -1, err
		}
	}
	ok = true
	return fd, nil
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

func sockaddrString(sa unix.Sockaddr) string {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	}
	return fmt.Sprint(sa)
}

// child is the parent's handle on a child process.
type child struct {
	in  io.WriteCloser
	out *json.Decoder
}

// startChild starts an app process in cgroup, inside ns; it is stopped at
// Cleanup (before the cgroup is removed).
func startChild(tb testing.TB, ns netNS, cgroup string) *child {
	tb.Helper()
	cg, err := os.Open(cgroup)
	if err != nil {
		tb.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envChildNetns+"="+ns.path)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start child in cgroup %s: %v", cgroup, err)
	}
	tb.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			tb.Errorf("child: %v", err)
		}
	})
	return &child{in: in, out: json.NewDecoder(out)}
}

func (c *child) do(tb testing.TB, req childReq) childResp {
	tb.Helper()
	b, _ := json.Marshal(req)
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		tb.Fatalf("send %+v to child: %v", req, err)
	}
	var resp childResp
	if err := c.out.Decode(&resp); err != nil {
		tb.Fatalf("read child answer to %+v: %v", req, err)
	}
	return resp
}

// mustDo is do that fails on an error from the child.
func (c *child) mustDo(tb testing.TB, req childReq) childResp {
	tb.Helper()
	resp := c.do(tb, req)
	if resp.Err != "" {
		tb.Fatalf("child %+v: %s", req, resp.Err)
	}
	return resp
}
