package preflight

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/bpf/redirect"
	"github.com/weftmesh/weft/internal/netns"
)

func statfsMagic(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return st.Type, nil
}

// probeOutcome classifies a probe's error: nil passes, ErrNotSupported
// fails (the kernel lacks it), a permission error skips (not probed: the
// privileges check fails and says why), anything else fails with the error.
func probeOutcome(err error) (Status, string) {
	switch {
	case err == nil:
		return StatusPass, ""
	case errors.Is(err, ebpf.ErrNotSupported):
		return StatusFail, "not supported"
	case errors.Is(err, unix.EPERM):
		return StatusSkip, "not probed: operation not permitted"
	default:
		return StatusFail, oneLine(err.Error())
	}
}

const hintPrivileged = "run weft check as root (see the privileges check)"

// sockAddrAttachTypes are the cgroup_sock_addr hooks bpf/redirect attaches.
var sockAddrAttachTypes = []struct {
	name   string
	attach ebpf.AttachType
}{
	{"connect4", ebpf.AttachCGroupInet4Connect},
	{"connect6", ebpf.AttachCGroupInet6Connect},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername},
	{"getsockname4", ebpf.AttachCgroupInet4GetSockname},
	{"getsockname6", ebpf.AttachCgroupInet6GetSockname},
}

// helperProbes are the helpers the programs call, by the program type that
// calls them (a helper may exist for one type and not another).
var helperProbes = []struct {
	pt     ebpf.ProgramType
	fn     asm.BuiltinFunc
	name   string
	ptName string
}{
	{ebpf.SchedCLS, asm.FnSkAssign, "sk_assign", "sched_cls"},
	{ebpf.SchedCLS, asm.FnSkcLookupTcp, "skc_lookup_tcp", "sched_cls"},
	{ebpf.CGroupSockAddr, asm.FnGetNetnsCookie, "get_netns_cookie", "cgroup_sock_addr"},
	{ebpf.CGroupSockAddr, asm.FnGetSocketCookie, "get_socket_cookie", "cgroup_sock_addr"},
	{ebpf.SockOps, asm.FnGetNetnsCookie, "get_netns_cookie", "sock_ops"},
	{ebpf.SockOps, asm.FnGetSocketCookie, "get_socket_cookie", "sock_ops"},
}

// checkBPF runs the eBPF probes: program and attach types, helpers, tcx,
// and loading weft's own collection.
func checkBPF() []Result {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; a no-op after.
	_ = rlimit.RemoveMemlock()
	return []Result{
		checkSockAddr(),
		checkProgType("sock_ops", ebpf.SockOps, "sockops (original destination by source address)"),
		checkProgType("sched_cls", ebpf.SchedCLS, "sched_cls (tcx ingress)"),
		checkHelpers(),
		checkTCX(),
		checkLoad(),
	}
}

func checkProgType(name string, pt ebpf.ProgramType, what string) Result {
	r := Result{Name: name}
	st, why := probeOutcome(features.HaveProgramType(pt))
	r.Status = st
	switch st {
	case StatusPass:
		r.Detail = "program type " + what + " supported"
	case StatusSkip:
		r.Detail, r.Hint = why, hintPrivileged
	default:
		r.Detail = "program type " + name + ": " + why
		r.Hint = "upgrade to Linux " + kernelRecommended.short() + " or later"
	}
	return r
}

// checkSockAddr probes the program type, then loads a trivial program for
// each attach type (the kernel checks the expected attach type at load).
func checkSockAddr() Result {
	r := checkProgType("cgroup_sock_addr", ebpf.CGroupSockAddr, "cgroup_sock_addr")
	if r.Status != StatusPass {
		return r
	}
	var ok, bad []string
	for _, at := range sockAddrAttachTypes {
		err := loadTrivial(ebpf.CGroupSockAddr, at.attach, 1)
		switch st, why := probeOutcome(err); st {
		case StatusPass:
			ok = append(ok, at.name)
		case StatusSkip:
			return Result{Name: r.Name, Status: st, Detail: why, Hint: hintPrivileged}
		default:
			bad = append(bad, at.name+" ("+why+")")
		}
	}
	if len(bad) > 0 {
		r.Status = StatusFail
		r.Detail = "cgroup_sock_addr attach types missing: " + strings.Join(bad, ", ")
		r.Hint = "upgrade to Linux " + kernelRecommended.short() + " or later (getpeername/getsockname hooks need 5.8)"
		return r
	}
	r.Detail = "cgroup_sock_addr loads for " + strings.Join(ok, ", ")
	return r
}

// loadTrivial loads "r0 = ret; exit" with a program type and expected
// attach type, and closes it.
func loadTrivial(pt ebpf.ProgramType, at ebpf.AttachType, ret int64) error {
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:         pt,
		AttachType:   at,
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, ret, asm.DWord), asm.Return()},
		License:      "GPL",
	}, ebpf.ProgramOptions{LogDisabled: true})
	if err != nil {
		return fmt.Errorf("load %v program for %v: %w", pt, at, err)
	}
	return p.Close()
}

func checkHelpers() Result {
	r := Result{Name: "helpers"}
	var missing []string
	for _, h := range helperProbes {
		switch st, why := probeOutcome(features.HaveProgramHelper(h.pt, h.fn)); st {
		case StatusPass:
		case StatusSkip:
			return Result{Name: r.Name, Status: st, Detail: why, Hint: hintPrivileged}
		default:
			missing = append(missing, h.ptName+"/"+h.name+" ("+why+")")
		}
	}
	if len(missing) > 0 {
		r.Status = StatusFail
		r.Detail = "missing helpers: " + strings.Join(missing, ", ")
		r.Hint = "upgrade to Linux " + kernelRecommended.short() + " or later"
		return r
	}
	r.Status = StatusPass
	r.Detail = "sk_assign, skc_lookup_tcp (sched_cls); get_netns_cookie, get_socket_cookie (cgroup_sock_addr, sock_ops)"
	return r
}

// checkTCX attaches a trivial tcx ingress program to the loopback device of
// a throwaway network namespace, queries it back, and detaches it: proof
// that tcx links work, without touching the host's devices.
func checkTCX() Result {
	r := Result{Name: "tcx"}
	st, why := probeOutcome(probeTCX())
	r.Status = st
	switch st {
	case StatusPass:
		r.Detail = "tcx ingress link attached to lo of a throwaway netns and queried back"
	case StatusSkip:
		r.Detail, r.Hint = why, hintPrivileged
	default:
		r.Detail = "tcx: " + why
		r.Hint = "inbound redirection attaches with tcx links: upgrade to Linux " + kernelRecommended.short() + " or later"
	}
	return r
}

func probeTCX() error {
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		AttachType:   ebpf.AttachTCXIngress,
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, -1, asm.DWord), asm.Return()}, // TCX_NEXT
		License:      "GPL",
	}, ebpf.ProgramOptions{LogDisabled: true})
	if err != nil {
		return fmt.Errorf("load tcx probe program: %w", err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("read tcx probe program info: %w", err)
	}
	id, _ := info.ID()

	ns, err := newNetns()
	if err != nil {
		return err
	}
	defer ns.Close() // the last reference: the namespace goes away with it

	return netns.Do(ns, func() error {
		// Device names and ifindexes resolve in the calling thread's netns.
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return fmt.Errorf("find lo in throwaway netns: %w", err)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return fmt.Errorf("attach tcx ingress to lo: %w", err)
		}
		defer l.Close()
		q, err := link.QueryPrograms(link.QueryOptions{Target: lo.Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return fmt.Errorf("query tcx ingress of lo: %w", err)
		}
		for _, p := range q.Programs {
			if p.ID == id {
				return nil
			}
		}
		return fmt.Errorf("query tcx ingress of lo: program %d not attached (%d programs)", id, len(q.Programs))
	})
}

// newNetns creates an empty network namespace and returns a handle to it.
// The thread that creates it is never unlocked, so the Go runtime discards
// it instead of reusing a thread in the wrong namespace; the namespace lives
// as long as the returned file.
func newNetns() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			c <- result{err: fmt.Errorf("create netns: %w", err)}
			return
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			err = fmt.Errorf("open new netns: %w", err)
		}
		c <- result{f, err}
	}()
	res := <-c
	return res.f, res.err
}

// checkLoad loads weft's real redirect collection without pins and releases
// it: the verifier of this kernel accepts (or rejects) the exact programs.
func checkLoad() Result {
	r := Result{Name: "load"}
	start := time.Now()
	o, err := redirect.Load(redirect.Options{})
	elapsed := time.Since(start).Round(time.Millisecond)
	if err == nil {
		err = o.Close()
	}
	st, why := probeOutcome(err)
	r.Status = st
	switch st {
	case StatusPass:
		r.Detail = fmt.Sprintf("loaded weft's redirect programs and maps in %v", elapsed)
	case StatusSkip:
		r.Detail, r.Hint = why, hintPrivileged
	default:
		var verr *ebpf.VerifierError
		r.Detail = "load redirect collection: " + why
		r.Hint = "the kernel cannot load weft's programs: report the kernel (uname -r) and this detail"
		if errors.As(err, &verr) {
			r.Hint = "the verifier rejected weft's programs on this kernel: report the kernel (uname -r) and this detail"
		}
	}
	return r
}
