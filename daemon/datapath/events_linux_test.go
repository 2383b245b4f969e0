package datapath

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/weftmesh/weft/bpf/redirect"
	"github.com/weftmesh/weft/daemon/agent"
	"github.com/weftmesh/weft/internal/testutil"
)

var names = testutil.NewNames("wdp")

type sink struct {
	flows chan *flowpb.Flow
	mu    sync.Mutex
	lost  uint64
}

func (s *sink) Add(f *flowpb.Flow) {
	select {
	case s.flows <- f:
	default: // a retransmitted SYN's flow; the first one is enough
	}
}
func (s *sink) AddLost(src flowpb.LostEventSource, n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if src == flowpb.LostEventSource_PERF_EVENT_RING_BUFFER {
		s.lost += n
	}
}

func newNetns(t *testing.T) string {
	t.Helper()
	name := names.Unique("ns")
	testutil.Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	testutil.Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// TestRunEventsInboundDrop: with the real programs loaded and a pod
// enrolled, a SYN to the pod that no node-proxy listener can take is dropped
// and shows up in the flow sink as a Hubble drop flow with the SYN's
// addresses; RunEvents ends when its context does.
func TestRunEventsInboundDrop(t *testing.T) {
	names.RequirePrivileged(t)
	node, pod := newNetns(t), newNetns(t)
	testutil.Run(t, "ip", "-n", node, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", pod)
	testutil.Run(t, "ip", "-n", node, "addr", "add", "10.251.0.1/24", "dev", "veth0")
	testutil.Run(t, "ip", "-n", pod, "addr", "add", "10.251.0.2/24", "dev", "eth0")
	testutil.Run(t, "ip", "-n", node, "link", "set", "veth0", "up")
	testutil.Run(t, "ip", "-n", pod, "link", "set", "eth0", "up")

	root, err := redirect.Cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(root, names.Unique("cg"))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join("/sys/fs/bpf", names.Unique("pin"))
	dp, err := Open(pinDir, cg, 0)
	if err != nil {
		os.Remove(cg)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp.Close()
		if err := Cleanup(pinDir, cg); err != nil {
			t.Errorf("cleanup datapath: %v", err)
		}
		if err := os.Remove(cg); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("remove test cgroup: %v", err)
		}
	})

	podPath := "/run/netns/" + pod
	nsFile, err := os.Open(podPath)
	if err != nil {
		t.Fatal(err)
	}
	defer nsFile.Close()
	cookie, err := redirect.NetnsCookie(redirect.InNetnsPath(podPath))
	if err != nil {
		t.Fatal(err)
	}
	podIP := netip.MustParseAddr("10.251.0.2")
	if err := dp.Enroll(t.Context(), agent.Pod{ID: 1, NetnsCookie: cookie, Netns: nsFile, IP: podIP}); err != nil {
		t.Fatal(err)
	}

	s := &sink{flows: make(chan *flowpb.Flow, 16)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- dp.RunEvents(ctx, s, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); <-done })

	src := netip.MustParseAddrPort("10.251.0.1:40999")
	dst := netip.AddrPortFrom(podIP, 8080)
	// No ztunnel listener on 15006: the SYN is dropped (fail closed).
	err = redirect.InNetnsPath("/run/netns/" + node)(func() error {
		d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: net.TCPAddrFromAddrPort(src)}
		c, err := d.Dial("tcp4", dst.String())
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatalf("dial %s succeeded, want the SYN dropped", dst)
	}

	var f *flowpb.Flow
	select {
	case f = <-s.flows:
	case <-time.After(5 * time.Second):
		t.Fatal("no flow from the datapath within 5s")
	}
	tcp := f.GetL4().GetTCP()
	if f.GetVerdict() != flowpb.Verdict_DROPPED || f.GetDropReasonDesc() != flowpb.DropReason_SOCKET_LOOKUP_FAILED ||
		f.GetEventType().GetType() != 1 || f.GetEmitter().GetName() != EmitterName ||
		f.GetTrafficDirection() != flowpb.TrafficDirection_INGRESS ||
		f.GetIP().GetSource() != src.Addr().String() || f.GetIP().GetDestination() != dst.Addr().String() ||
		tcp.GetSourcePort() != uint32(src.Port()) || tcp.GetDestinationPort() != uint32(dst.Port()) ||
		f.GetTime() == nil || time.Since(f.GetTime().AsTime()).Abs() > 10*time.Second {
		t.Errorf("flow = %v\nwant DROPPED SOCKET_LOOKUP_FAILED ingress %s -> %s, event type 1, emitter %s, recent time", f, src, dst, EmitterName)
	}

	cancel()
	select {
	case err := <-done:
		done <- err // for Cleanup
		if err != nil {
			t.Errorf("RunEvents = %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunEvents did not return within 5s of cancel")
	}
}
