package redirect

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func localBanner(prefix string) func(net.Conn) string {
	return func(c net.Conn) string { return prefix + " local=" + c.LocalAddr().String() }
}

// TestInbound: with the tcx program on the pod's eth0 (attached from inside
// the pod netns), a SYN from another netns to the pod lands on ztunnel's
// inbound listener with the original destination as its local address;
// HBONE and probe SYNs and connections opened before attach are untouched;
// without the inbound listener SYNs are dropped and counted; detach restores
// direct delivery.
func TestInbound(t *testing.T) {
	requirePrivileged(t)
	p := newPair(t)
	o := mustLoad(t, Options{})

	serve(t, p.pod, "tcp4", "0.0.0.0:8080", localBanner("app"))
	inbound := serve(t, p.pod, "tcp4", podIP.String()+":15006", localBanner("inbound"))
	serve(t, p.pod, "tcp4", "0.0.0.0:15008", localBanner("hbone"))
	from := netip.AddrPortFrom(remoteIP, 0)
	app := netip.AddrPortFrom(podIP, 8080)

	pre := mustDialFrom(t, p.node, from, app)
	if got := pre.line(t); got != "app local="+app.String() {
		t.Fatalf("before attach: %q", got)
	}

	cookie, err := o.AttachIngress(p.pod.runner(), "eth0", IngressConfig{ProbeSource: nodeIP, PodIP: podIP})
	if err != nil {
		t.Fatal(err)
	}
	if want := p.pod.cookie(t); cookie != want {
		t.Errorf("AttachIngress cookie = %d, want the pod netns cookie %d", cookie, want)
	}
	if n := countTCXProgs(t, p.pod); n != 1 {
		t.Errorf("tcx ingress programs on the pod's eth0 = %d, want 1", n)
	}
	// The node end must be untouched: the attach happened in the pod netns.
	if n := countTCXProgsOn(t, p.node, "veth0"); n != 0 {
		t.Errorf("tcx ingress programs on the node's veth0 = %d, want 0", n)
	}

	tests := []struct {
		name  string
		src   netip.Addr
		dst   netip.AddrPort
		want  string
		count func(Counters) uint64
	}{
		{"syn to the app goes to the inbound listener", remoteIP, app, "inbound local=" + app.String(),
			func(c Counters) uint64 { return c.InboundAssigned }},
		{"syn to a port nobody listens on goes to the inbound listener", remoteIP, netip.AddrPortFrom(podIP, 9999),
			"inbound local=" + podIP.String() + ":9999", func(c Counters) uint64 { return c.InboundAssigned }},
		{"syn to hbone goes to the hbone listener", remoteIP, netip.AddrPortFrom(podIP, 15008),
			"hbone local=" + podIP.String() + ":15008", nil},
		{"probe from the node goes to the app", nodeIP, app, "app local=" + app.String(),
			func(c Counters) uint64 { return c.ProbePass }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := mustCounters(t, o)
			c := mustDialFrom(t, p.node, netip.AddrPortFrom(tt.src, 0), tt.dst)
			if got := c.line(t); got != tt.want {
				t.Errorf("dial %s from %s: server said %q, want %q", tt.dst, tt.src, got, tt.want)
			}
			c.echo(t, "ping")
			d := mustCounters(t, o).diff(before)
			want := Counters{}
			if tt.count != nil {
				if n := tt.count(d); n != 1 {
					t.Errorf("counter delta = %d, want 1 (all deltas %+v)", n, d)
				}
			} else if d != want {
				t.Errorf("counters moved: %+v, want none", d)
			}
		})
	}

	t.Run("connection from before attach continues", func(t *testing.T) {
		pre.echo(t, "still here")
	})

	t.Run("no inbound listener: syn dropped and counted", func(t *testing.T) {
		inbound.Close()
		before := mustCounters(t, o)
		c, err := dialFrom(p.node, from, app, 500*time.Millisecond)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s with no inbound listener succeeded, want it dropped", app)
		}
		var nerr net.Error
		if !errors.As(err, &nerr) || !nerr.Timeout() {
			t.Errorf("dial %s with no inbound listener: %v, want a timeout (SYN dropped, not refused)", app, err)
		}
		if d := mustCounters(t, o).diff(before); d.InboundDropNoListener == 0 {
			t.Errorf("inbound_drop_no_listener did not grow (deltas %+v)", d)
		}
		// The connection from before attach is not affected.
		pre.echo(t, "still here")
	})

	t.Run("detach restores direct delivery", func(t *testing.T) {
		if err := o.DetachIngress(cookie); err != nil {
			t.Fatal(err)
		}
		if err := o.DetachIngress(cookie); err != nil {
			t.Errorf("second DetachIngress = %v, want nil (idempotent)", err)
		}
		if n := countTCXProgs(t, p.pod); n != 0 {
			t.Errorf("tcx programs after DetachIngress = %d, want 0", n)
		}
		var cfg redirectIngressConfig
		key, _, _ := ingressValue(IngressConfig{PodIP: podIP})
		if err := o.objs.IngressCfg.Lookup(key, &cfg); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("ingress config after DetachIngress: %v, want ErrKeyNotExist", err)
		}
		c := mustDialFrom(t, p.node, from, app)
		if got := c.line(t); got != "app local="+app.String() {
			t.Errorf("after detach: server said %q, want the app", got)
		}
	})
}

// TestInboundWildcardListener: the inbound listener may be bound to 0.0.0.0.
func TestInboundWildcardListener(t *testing.T) {
	requirePrivileged(t)
	p := newPair(t)
	o := mustLoad(t, Options{})
	serve(t, p.pod, "tcp4", "0.0.0.0:15006", localBanner("inbound"))
	if _, err := o.AttachIngress(p.pod.runner(), "eth0", IngressConfig{PodIP: podIP}); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(podIP, 80)
	c := mustDialFrom(t, p.node, netip.AddrPortFrom(nodeIP, 0), dst)
	if got, want := c.line(t), "inbound local="+dst.String(); got != want {
		t.Errorf("dial %s: server said %q, want %q (no probe source configured)", dst, got, want)
	}
}

// TestDetachIngressAfterPodGone: DetachIngress needs no netns and succeeds
// when the pod's device (or netns) is already gone, with or without pins.
func TestDetachIngressAfterPodGone(t *testing.T) {
	requirePrivileged(t)
	for _, pinned := range []bool{false, true} {
		t.Run(fmt.Sprint("pinned=", pinned), func(t *testing.T) {
			var opts Options
			if pinned {
				opts.PinDir = newPinDir(t)
			}
			o := mustLoad(t, opts)
			p := newPair(t)
			cookie, err := o.AttachIngress(p.pod.runner(), "eth0", IngressConfig{PodIP: podIP})
			if err != nil {
				t.Fatal(err)
			}
			run(t, "ip", "netns", "del", p.pod.name)
			if err := o.DetachIngress(cookie); err != nil {
				t.Errorf("DetachIngress after the pod netns is gone = %v, want nil", err)
			}
			if pinned {
				if _, err := os.Stat(filepath.Join(opts.PinDir, tcxLinkName(cookie))); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("tcx pin after DetachIngress: %v, want removed", err)
				}
			}
		})
	}
}

// TestAttachIngressErrors: a missing device is an error that leaves no
// config behind; the attach happens in the pod netns, so a device that only
// exists in the node netns is not found.
func TestAttachIngressErrors(t *testing.T) {
	requirePrivileged(t)
	o := mustLoad(t, Options{})
	p := newPair(t)
	if _, err := o.AttachIngress(p.pod.runner(), "veth0", IngressConfig{PodIP: podIP}); err == nil {
		t.Error("AttachIngress of the node's veth0 from the pod netns succeeded, want not found")
	}
	if _, err := o.AttachIngress(p.pod.runner(), "lo", IngressConfig{PodIP: podIP}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("AttachIngress of lo = %v, want ErrUnsupported (not Ethernet)", err)
	}
	key, _, _ := ingressValue(IngressConfig{PodIP: podIP})
	var v redirectIngressConfig
	if err := o.objs.IngressCfg.Lookup(key, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("ingress config after failed attaches: %v, want none", err)
	}
}

func countTCXProgs(tb testing.TB, pod netNS) int {
	tb.Helper()
	return countTCXProgsOn(tb, pod, "eth0")
}

// countTCXProgsOn counts tcx ingress programs on ifname, resolved in ns.
func countTCXProgsOn(tb testing.TB, ns netNS, ifname string) int {
	tb.Helper()
	var n int
	ns.do(tb, func() error {
		iface, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: iface.Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		n = len(res.Programs)
		return nil
	})
	return n
}
