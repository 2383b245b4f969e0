// Package datapath adapts weft's eBPF redirect programs (bpf/redirect) to
// the agent: it loads and pins them, attaches the outbound programs to one
// cgroup v2 directory, and per pod fills the netns map and attaches the tcx
// ingress program from inside the pod's namespace. It exports the
// datapath's counters as Prometheus metrics, and its events (connections it
// gave up on) as Hubble drop flows (RunEvents).
package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/bpf/redirect"
	"github.com/weftmesh/weft/daemon/agent"
	"github.com/weftmesh/weft/internal/netns"
)

// BPF is the eBPF datapath. It is safe for concurrent use.
type BPF struct {
	objs   *redirect.Objects
	cgroup string
}

// Open loads the programs with pins under pinDir (reusing pins of an
// earlier run, so a restart neither interrupts nor duplicates redirection)
// and attaches the outbound programs to cgroupPath ("" = the cgroup v2 root).
func Open(pinDir, cgroupPath string, mark uint32) (*BPF, error) {
	if cgroupPath == "" {
		root, err := redirect.Cgroup2Root()
		if err != nil {
			return nil, err
		}
		cgroupPath = root
	}
	objs, err := redirect.Load(redirect.Options{PinDir: pinDir, SocketMark: mark})
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	if _, err := objs.AttachCgroup(cgroupPath); err != nil {
		objs.Close()
		return nil, fmt.Errorf("attach datapath to cgroup %s: %w", cgroupPath, err)
	}
	return &BPF{objs: objs, cgroup: cgroupPath}, nil
}

// Enroll starts redirecting a pod: outbound by its netns cookie, inbound by
// the tcx program on the pod's eth0, attached from inside its namespace.
func (b *BPF) Enroll(_ context.Context, p agent.Pod) error {
	if err := b.objs.Enroll(p.NetnsCookie, redirect.PodInfo{PodID: p.ID, IP: p.IP}); err != nil {
		return fmt.Errorf("enroll netns %d: %w", p.NetnsCookie, err)
	}
	run := func(fn func() error) error { return netns.Do(p.Netns, fn) }
	if _, err := b.objs.AttachIngress(run, "eth0", redirect.IngressConfig{PodIP: p.IP, ProbeSource: p.ProbeSource}); err != nil {
		return errors.Join(fmt.Errorf("attach ingress in netns %d: %w", p.NetnsCookie, err), b.objs.Unenroll(p.NetnsCookie))
	}
	return nil
}

// Release stops redirecting a pod. Missing state is not an error.
func (b *BPF) Release(_ context.Context, cookie uint64) error {
	var errs []error
	if err := b.objs.Unenroll(cookie); err != nil && !errors.Is(err, redirect.ErrNotFound) {
		errs = append(errs, err)
	}
	if err := b.objs.DetachIngress(cookie); err != nil && !errors.Is(err, redirect.ErrNotFound) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Enrolled lists the netns cookies in the pinned map.
func (b *BPF) Enrolled() (map[uint64]netip.Addr, error) {
	m, err := b.objs.Enrolled()
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]netip.Addr, len(m))
	for cookie, info := range m {
		out[cookie] = info.IP
	}
	return out, nil
}

// Redirects reports whether the netns with cookie is in the map.
func (b *BPF) Redirects(cookie uint64) (bool, error) { return b.objs.IsEnrolled(cookie) }

// LookupOrigDst returns the original destination of a redirected
// connection, by the peer address the proxy accepted it from.
func (b *BPF) LookupOrigDst(cookie uint64, peer netip.AddrPort) (netip.AddrPort, error) {
	return b.objs.LookupOrigDst(cookie, peer.Addr(), peer.Port())
}

// Close releases this process's handles; pinned state stays in the kernel.
func (b *BPF) Close() error { return b.objs.Close() }

// Cleanup detaches everything this agent attached and removes its pins
// (weft-agent --cleanup). Another agent's pin root is never touched.
func Cleanup(pinDir, cgroupPath string) error {
	if cgroupPath == "" {
		root, err := redirect.Cgroup2Root()
		if err != nil {
			return err
		}
		cgroupPath = root
	}
	var errs []error
	if objs, err := redirect.Load(redirect.Options{PinDir: pinDir}); err == nil {
		if err := objs.DetachCgroup(cgroupPath); err != nil {
			errs = append(errs, err)
		}
		objs.Close()
	} else {
		errs = append(errs, err)
	}
	if err := redirect.Cleanup(pinDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Collector exports the datapath counters.
func (b *BPF) Collector() prometheus.Collector { return &collector{b: b} }

type collector struct{ b *BPF }

var (
	descRedirects = prometheus.NewDesc("weft_agent_datapath_redirects_total", "Outbound connects redirected to the node proxy.", nil, nil)
	descSkipped   = prometheus.NewDesc("weft_agent_datapath_skipped_total", "Outbound connects of enrolled pods left alone, by reason.", []string{"reason"}, nil)
	descInbound   = prometheus.NewDesc("weft_agent_datapath_inbound_assigned_total", "Inbound SYNs assigned to the node proxy's plaintext listener.", nil, nil)
	descDrops     = prometheus.NewDesc("weft_agent_datapath_drops_total", "Inbound SYNs dropped because no proxy listener was there (fail closed).", nil, nil)
	descProbes    = prometheus.NewDesc("weft_agent_datapath_probe_passes_total", "Inbound SYNs from the node (kubelet probes) passed to the app.", nil, nil)
	descErrors    = prometheus.NewDesc("weft_agent_datapath_errors_total", "Datapath map or socket-assignment errors.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRedirects, descSkipped, descInbound, descDrops, descProbes, descErrors} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n, err := c.b.objs.Counters()
	if err != nil {
		return
	}
	cnt := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	cnt(descRedirects, n.Redirected)
	cnt(descSkipped, n.SkippedUDP, "udp")
	cnt(descSkipped, n.SkippedLoopback, "loopback")
	cnt(descSkipped, n.SkippedSelf, "self")
	cnt(descSkipped, n.SkippedMarked, "marked")
	cnt(descSkipped, n.SkippedBoundDev, "bound_device")
	cnt(descSkipped, n.SkippedIPv6, "ipv6")
	cnt(descInbound, n.InboundAssigned)
	cnt(descDrops, n.InboundDropNoListener)
	cnt(descProbes, n.ProbePass)
	cnt(descErrors, n.Errors)
}
