package redirect

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// TestPinsSurviveRestart: with a PinDir, redirection keeps working after the
// Objects are closed (an agent restart), a new Load reuses the pinned maps
// and attachments — still exactly one program per hook, now the new load's —
// and Cleanup detaches everything and removes only its own pins.
func TestPinsSurviveRestart(t *testing.T) {
	requirePrivileged(t)
	pinDir := newPinDir(t)
	e := newOutboundEnv(t, Options{PinDir: pinDir})
	e.enroll(t)
	serve(t, e.pod, "tcp4", podIP.String()+":15006", localBanner("inbound"))
	ingressCfg := IngressConfig{PodIP: podIP, ProbeSource: nodeIP}
	if _, err := e.o.AttachIngress(e.pod.runner(), "eth0", ingressCfg); err != nil {
		t.Fatal(err)
	}
	// What is not ours (here another agent's directory; bpffs holds only
	// pins and directories) must survive Cleanup.
	foreign := filepath.Join(pinDir, "other-agent")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(foreign) })

	app := startChild(t, e.pod, e.cgroup)
	checkRedirected := func(t *testing.T, id string) {
		t.Helper()
		r := app.mustDo(t, childReq{Op: "dial", ID: id, Net: "tcp4", Addr: dst80})
		if r.Line != "ztunnel orig="+dst80 {
			t.Errorf("dial %s: server said %q, want ztunnel", dst80, r.Line)
		}
		c := mustDialFrom(t, e.node, netip.AddrPortFrom(remoteIP, 0), netip.AddrPortFrom(podIP, 8080))
		if got, want := c.line(t), "inbound local="+podIP.String()+":8080"; got != want {
			t.Errorf("inbound dial: server said %q, want %q", got, want)
		}
	}
	checkAttached := func(t *testing.T, want *Objects) {
		t.Helper()
		for _, h := range cgroupHooks {
			ids := cgroupProgIDs(t, e.cgroup, h.attach)
			if len(ids) != 1 {
				t.Errorf("%s programs at the cgroup = %d, want 1", h.name, len(ids))
				continue
			}
			if want != nil && ids[0] != progID(t, want.cgroupHook(h.name)) {
				t.Errorf("%s at the cgroup runs program %d, want the new load's %d", h.name, ids[0], progID(t, want.cgroupHook(h.name)))
			}
		}
		if n := countTCXProgs(t, e.pod); n != 1 {
			t.Errorf("tcx programs on eth0 = %d, want 1", n)
		}
	}

	checkRedirected(t, "first")
	checkAttached(t, e.o)
	first := mustCounters(t, e.o)

	// Agent exit: handles closed, pins stay.
	if err := e.o.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("attachments outlive the objects", func(t *testing.T) {
		// Meanwhile the fake ztunnel reads the pinned map itself, as
		// another process would.
		r, err := OpenOrigDst(pinDir)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		e.setLookup(func(cookie uint64, ip netip.Addr, port uint16) (netip.AddrPort, error) {
			return r.Lookup(cookie, netip.AddrPortFrom(ip, port))
		})
		checkAttached(t, nil)
		checkRedirected(t, "closed")
	})

	// Agent restart.
	o2 := mustLoad(t, Options{PinDir: pinDir})
	e.setLookup(o2.LookupOrigDst)
	t.Run("reload reuses maps and links", func(t *testing.T) {
		enrolled, err := o2.Enrolled()
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := enrolled[e.cookie]; !ok || got.PodID != 7 || got.IP != podIP {
			t.Errorf("Enrolled()[%d] = %+v, %v; want pod 7 at %s (map reused)", e.cookie, got, ok, podIP)
		}
		if c := mustCounters(t, o2); c.Redirected < first.Redirected {
			t.Errorf("Redirected after reload = %d, want >= %d (counters reused)", c.Redirected, first.Redirected)
		}
		// Load already moved the pinned links to the new programs.
		checkAttached(t, o2)
		if _, err := o2.AttachCgroup(e.cgroup); err != nil {
			t.Fatal(err)
		}
		if _, err := o2.AttachCgroup(e.cgroup); err != nil {
			t.Fatal(err)
		}
		if _, err := o2.AttachIngress(e.pod.runner(), "eth0", ingressCfg); err != nil {
			t.Fatal(err)
		}
		if _, err := o2.AttachIngress(e.pod.runner(), "eth0", ingressCfg); err != nil {
			t.Fatal(err)
		}
		checkAttached(t, o2)
		if ids := tcxProgIDs(t, e.pod); len(ids) != 1 || ids[0] != progID(t, o2.objs.WeftIngress) {
			t.Errorf("tcx programs = %v, want only the new load's %d", ids, progID(t, o2.objs.WeftIngress))
		}
		checkRedirected(t, "reloaded")
	})

	if err := o2.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("cleanup detaches and removes own pins", func(t *testing.T) {
		if err := Cleanup(pinDir); err != nil {
			t.Fatal(err)
		}
		for _, h := range cgroupHooks {
			if n := countCgroupProgs(t, e.cgroup, h.attach); n != 0 {
				t.Errorf("%s programs after Cleanup = %d, want 0", h.name, n)
			}
		}
		if n := countTCXProgs(t, e.pod); n != 0 {
			t.Errorf("tcx programs after Cleanup = %d, want 0", n)
		}
		entries, _ := os.ReadDir(pinDir)
		for _, en := range entries {
			if filepath.Join(pinDir, en.Name()) != foreign {
				t.Errorf("pin %s left after Cleanup", en.Name())
			}
		}
		if _, err := os.Stat(foreign); err != nil {
			t.Errorf("Cleanup removed a directory it did not create: %v", err)
		}
		os.Remove(foreign)
		if err := Cleanup(pinDir); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(pinDir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pin dir after Cleanup: %v, want it removed", err)
		}
	})
}

// TestPinsDefunctLinkReplaced: a pinned tcx link whose pod netns is gone is
// dropped by the next Load, with its config.
func TestPinsDefunctLinkReplaced(t *testing.T) {
	requirePrivileged(t)
	pinDir := newPinDir(t)
	o := mustLoad(t, Options{PinDir: pinDir})
	p := newPair(t)
	cookie, err := o.AttachIngress(p.pod.runner(), "eth0", IngressConfig{PodIP: podIP})
	if err != nil {
		t.Fatal(err)
	}
	o.Close()
	run(t, "ip", "-n", p.pod.name, "link", "del", "eth0") // the pod's device goes away

	o2 := mustLoad(t, Options{PinDir: pinDir})
	if _, err := os.Stat(filepath.Join(pinDir, tcxLinkName(cookie))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pin of a defunct tcx link after Load: %v, want removed", err)
	}
	key, _, _ := ingressValue(IngressConfig{PodIP: podIP})
	var v redirectIngressConfig
	if err := o2.objs.IngressCfg.Lookup(key, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("ingress config of a defunct link after Load: %v, want removed", err)
	}
}

// TestLoadIncompatiblePins: a pinned map of another layout is reported as
// ErrIncompatiblePins, and Cleanup makes the pin dir usable again.
func TestLoadIncompatiblePins(t *testing.T) {
	requirePrivileged(t)
	pinDir := newPinDir(t)
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "mesh_netns", Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(pinDir, "mesh_netns")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Options{PinDir: pinDir}); !errors.Is(err, ErrIncompatiblePins) {
		t.Fatalf("Load over an incompatible pinned map = %v, want ErrIncompatiblePins", err)
	}
	if err := Cleanup(pinDir); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, Options{PinDir: pinDir})
}

// TestLoadRejectsNonBPFFS: pins need a bpffs.
func TestLoadRejectsNonBPFFS(t *testing.T) {
	requirePrivileged(t)
	if _, err := Load(Options{PinDir: t.TempDir()}); err == nil {
		t.Error("Load with a PinDir on tmpfs succeeded, want an error")
	}
}

func progID(tb testing.TB, p *ebpf.Program) ebpf.ProgramID {
	tb.Helper()
	info, err := p.Info()
	if err != nil {
		tb.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func cgroupProgIDs(tb testing.TB, cgroup string, attach ebpf.AttachType) []ebpf.ProgramID {
	tb.Helper()
	f := openDir(tb, cgroup)
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: attach})
	if err != nil {
		tb.Fatalf("query %v programs: %v", attach, err)
	}
	var ids []ebpf.ProgramID
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids
}

func tcxProgIDs(tb testing.TB, ns netNS) []ebpf.ProgramID {
	tb.Helper()
	var ids []ebpf.ProgramID
	ns.do(tb, func() error {
		iface, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: iface.Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		for _, p := range res.Programs {
			ids = append(ids, p.ID)
		}
		return nil
	})
	return ids
}

// TestDetachCgroup: DetachCgroup detaches every hook and removes its pins,
// also from a later process (reopened from the pins); a second call is a no-op.
func TestDetachCgroup(t *testing.T) {
	requirePrivileged(t)
	pinDir := newPinDir(t)
	cg := newCgroup(t)
	o := mustLoad(t, Options{PinDir: pinDir})
	if _, err := o.AttachCgroup(cg); err != nil {
		t.Fatal(err)
	}
	o.Close()
	o2 := mustLoad(t, Options{PinDir: pinDir})
	for i := 0; i < 2; i++ {
		if err := o2.DetachCgroup(cg); err != nil {
			t.Fatalf("DetachCgroup #%d = %v", i+1, err)
		}
	}
	for _, h := range cgroupHooks {
		if n := countCgroupProgs(t, cg, h.attach); n != 0 {
			t.Errorf("%s programs after DetachCgroup = %d, want 0", h.name, n)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(pinDir, linkPrefixCgroup+"*"))
	if len(matches) != 0 {
		t.Errorf("cgroup link pins after DetachCgroup: %v", matches)
	}
}
