package cluster

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// setupNetwork builds the underlay: a bridge in a namespace of its own, the
// control plane's namespace and every node's namespace attached to it by veth,
// and one host veth so the host (tests, kubectl) reaches the API server and
// node addresses. Nodes route each other's pod CIDRs; the control plane routes
// them too, so pods reach the API server directly. Nothing has a default
// route: no packet of the cluster can leave for any other address.
func (c *Cluster) setupNetwork() error {
	rid := c.run.state.RunID
	ul := netnsName(rid, "ul")
	prefixLen := c.addr.underlay().Bits()
	if err := c.checkUnderlayFree(); err != nil {
		return err
	}
	cmds := [][]string{
		{"netns", "add", ul},
		{"-n", ul, "link", "set", "lo", "up"},
		{"-n", ul, "link", "add", "br0", "type", "bridge"},
		{"-n", ul, "link", "set", "br0", "up"},
		// Host leg.
		{"link", "add", hostVethName(rid), "type", "veth", "peer", "name", "host", "netns", ul},
		{"-n", ul, "link", "set", "host", "master", "br0", "up"},
		{"addr", "add", fmt.Sprintf("%s/%d", c.addr.host(), prefixLen), "dev", hostVethName(rid)},
		{"link", "set", hostVethName(rid), "up"},
	}
	attach := func(ns, leg string, addr netip.Addr) {
		cmds = append(cmds,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", ul, "link", "add", leg, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", ul, "link", "set", leg, "master", "br0", "up"},
			[]string{"-n", ns, "addr", "add", fmt.Sprintf("%s/%d", addr, prefixLen), "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	attach(netnsName(rid, "cp"), "cp", c.addr.controlPlane())
	for i, n := range c.run.state.Nodes {
		attach(netnsName(rid, n), fmt.Sprintf("n%d", i), c.addr.node(i))
	}
	for i, n := range c.run.state.Nodes {
		// Locally generated traffic needs a route before the OUTPUT chain can
		// DNAT it (a real node has a default route). Route the Service range
		// to a veth whose peer stays in the node's own netns, the way
		// kube-proxy's IPVS mode uses its kube-ipvs0 dummy (this kernel has no
		// dummy driver): a VIP kube-proxy has not programmed goes nowhere,
		// its ARP is unanswered and it is dropped.
		ns := netnsName(rid, n)
		cmds = append(cmds,
			[]string{"-n", ns, "link", "add", "svc0", "type", "veth", "peer", "name", "svc1"},
			[]string{"-n", ns, "link", "set", "svc1", "up"},
			[]string{"-n", ns, "link", "set", "svc0", "up"},
			[]string{"-n", ns, "route", "add", serviceCIDR, "dev", "svc0", "src", c.addr.node(i).String()},
		)
	}
	for i := range c.run.state.Nodes {
		via := c.addr.node(i).String()
		cmds = append(cmds, []string{"-n", netnsName(rid, "cp"), "route", "add", c.addr.podCIDR(i).String(), "via", via})
		for j, m := range c.run.state.Nodes {
			if i != j {
				cmds = append(cmds, []string{"-n", netnsName(rid, m), "route", "add", c.addr.podCIDR(i).String(), "via", via})
			}
		}
	}
	for _, args := range cmds {
		if err := ip(args...); err != nil {
			return fmt.Errorf("set up underlay: %w", err)
		}
	}
	for _, n := range c.run.state.Nodes {
		ns := netnsName(rid, n)
		// Nodes forward pod traffic; bridged pod traffic passes iptables so
		// kube-proxy's Service DNAT works between pods of one bridge.
		if err := inNetns(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
			return err
		}
		if _, err := os.Stat("/proc/sys/net/bridge"); err == nil {
			if err := inNetns(ns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkUnderlayFree refuses to use a slot whose /24 the host already routes
// (for example an interface someone else configured), so the harness never
// shadows an address it does not own.
func (c *Cluster) checkUnderlayFree() error {
	out, err := output("ip", "-4", "route", "show", "to", "match", c.addr.host().String())
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && !strings.HasPrefix(line, "default") {
			return fmt.Errorf("underlay %s is already routed on this host (%q): pick another slot or remove it", c.addr.underlay(), line)
		}
	}
	return nil
}
