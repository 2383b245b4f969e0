package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"testing"
)

// TestConstants: the Go defaults match the compiled object and the C source.
func TestConstants(t *testing.T) {
	spec, err := loadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{redirectVarWeftMark: SocketMark, redirectVarWeftMarkMask: SocketMarkMask} {
		var got uint32
		if err := spec.Variables[name].Get(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s in redirect_bpfel.o = %#x, want %#x", name, got, want)
		}
	}
	src, err := os.ReadFile("redirect.c")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{
		"DEFAULT_OUTBOUND_PORT": OutboundPort,
		"DEFAULT_INBOUND_PORT":  InboundPort,
		"DEFAULT_HBONE_PORT":    HBONEPort,

		"EVENT_REDIRECT_RECORD_FAILED": int(EventRedirectRecordFailed),
		"EVENT_ORIG_DST_UPDATE_FAILED": int(EventOrigDstUpdateFailed),
		"EVENT_INBOUND_NO_LISTENER":    int(EventInboundNoListener),
		"EVENT_INBOUND_ASSIGN_FAILED":  int(EventInboundAssignFailed),
	} {
		m := regexp.MustCompile(`(?m)^#define ` + name + ` (\d+)$`).FindSubmatch(src)
		if m == nil || string(m[1]) != fmt.Sprint(want) {
			t.Errorf("redirect.c: #define %s = %q, want %d", name, m, want)
		}
	}
}

func TestIPConversions(t *testing.T) {
	for _, s := range []string{"10.250.0.2", "127.0.0.1", "255.1.2.3"} {
		a := netip.MustParseAddr(s)
		v, err := beIP4(a)
		if err != nil {
			t.Fatal(err)
		}
		if got := ip4FromBE(v); got != a {
			t.Errorf("ip4FromBE(beIP4(%s)) = %s", a, got)
		}
		if mapped, _ := beIP4(netip.AddrFrom16(a.As16())); mapped != v {
			t.Errorf("beIP4(::ffff:%s) = %#x, want %#x", a, mapped, v)
		}
	}
	if _, err := beIP4(netip.MustParseAddr("fd00::1")); err == nil {
		t.Error("beIP4(fd00::1) succeeded, want an error")
	}
	if got := beToHost16(0x511f); got != 8017 { // 0x1f51 in network order
		t.Errorf("beToHost16(0x511f) = %d, want 8017", got)
	}
}

func TestMapAPI(t *testing.T) {
	requirePrivileged(t)
	o := mustLoad(t, Options{})
	if _, err := o.LookupOrigDst(1, netip.MustParseAddr("127.0.0.1"), 40000); !errors.Is(err, ErrNotFound) {
		t.Errorf("LookupOrigDst of nothing = %v, want ErrNotFound", err)
	}
	if err := o.Enroll(1, PodInfo{IP: netip.MustParseAddr("fd00::1")}); err == nil {
		t.Error("Enroll with an IPv6 pod IP succeeded, want an error")
	}
	if err := o.Enroll(1, PodInfo{PodID: 3, IP: netip.MustParseAddr("10.1.2.3")}); err != nil {
		t.Fatal(err)
	}
	got, err := o.Enrolled()
	if err != nil {
		t.Fatal(err)
	}
	want := PodInfo{PodID: 3, IP: netip.MustParseAddr("10.1.2.3"), OutboundPort: OutboundPort}
	if len(got) != 1 || got[1] != want {
		t.Errorf("Enrolled() = %+v, want {1: %+v}", got, want)
	}
	for cookie, want := range map[uint64]bool{1: true, 2: false} {
		if got, err := o.IsEnrolled(cookie); err != nil || got != want {
			t.Errorf("IsEnrolled(%d) = %v, %v; want %v", cookie, got, err, want)
		}
	}
	if _, err := o.AttachIngress(func(func() error) error { return nil }, "eth0", IngressConfig{}); err == nil {
		t.Error("AttachIngress without a pod IP succeeded, want an error")
	}
	o.Close()
	if _, err := o.AttachCgroup("/"); !errors.Is(err, errClosed) {
		t.Errorf("AttachCgroup after Close = %v, want errClosed", err)
	}
}

// TestOutboundOptions: the socket mark and the outbound port are configurable.
func TestOutboundOptions(t *testing.T) {
	requirePrivileged(t)
	e := newOutboundEnv(t, Options{SocketMark: 0x77, SocketMarkMask: 0xff})
	serve(t, e.pod, "tcp4", "127.0.0.1:15099", fixed("ztunnel on 15099"))
	if err := e.o.Enroll(e.cookie, PodInfo{IP: podIP, OutboundPort: 15099}); err != nil {
		t.Fatal(err)
	}
	app := startChild(t, e.pod, e.cgroup)
	tests := []struct {
		mark int
		want string
	}{
		{0x177, "node"},                  // (0x177 & 0xff) == 0x77: ztunnel's
		{SocketMark, "ztunnel on 15099"}, // not the configured mark
	}
	for i, tt := range tests {
		r := app.mustDo(t, childReq{Op: "dial", ID: fmt.Sprint(i), Net: "tcp4", Addr: dst80, Mark: tt.mark})
		if r.Line != tt.want {
			t.Errorf("dial with mark %#x: server said %q, want %q", tt.mark, r.Line, tt.want)
		}
	}
}
