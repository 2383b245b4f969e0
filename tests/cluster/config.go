package cluster

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
)

// CNI names a reference CNI chain for the pods of a cluster.
type CNI string

const (
	// CNIBridge wires pods to a per-node Linux bridge (bridge + host-local).
	CNIBridge CNI = "bridge"
	// CNIPTP wires each pod with its own veth and host route (ptp + host-local).
	CNIPTP CNI = "ptp"
)

// Config describes a cluster. The zero value is a 2-node bridge cluster.
type Config struct {
	// Name is a label for humans and for `weft-cluster down NAME`; it does not
	// have to be unique. Default "weft".
	Name string
	// Nodes is the number of nodes (default 2, at most 200).
	Nodes int
	// CNI selects the reference chain (default CNIBridge).
	CNI CNI
	// ExtraCNIPlugins are appended to every node's chain, e.g. weft's own
	// chained plugin. In their JSON, $NODE_ROOT and $NODE_NAME are replaced
	// by the node's host-path root and name.
	ExtraCNIPlugins []json.RawMessage
	// ExtraCNIBinaries are installed into every node's CNI bin dir, by
	// plugin type (file name) → local binary.
	ExtraCNIBinaries map[string]string
	// StateRoot holds run directories (default DefaultStateRoot).
	StateRoot string
	// Images maps extra image repositories to local binaries, on top of the
	// test apps and CoreDNS.
	Images map[string]string
	// SkipDNS leaves CoreDNS out (for tests that do not resolve names).
	SkipDNS bool
	// SkipKubeProxy leaves kube-proxy out of every node.
	SkipKubeProxy bool
	// Log receives the harness's progress; default discards.
	Log *slog.Logger

	// controlPlaneOnly stops after the control plane (this package's tests).
	controlPlaneOnly bool
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = "weft"
	}
	if c.Nodes == 0 {
		c.Nodes = 2
	}
	if c.Nodes < 1 || c.Nodes > 200 {
		return fmt.Errorf("nodes = %d, want 1..200", c.Nodes)
	}
	switch c.CNI {
	case "":
		c.CNI = CNIBridge
	case CNIBridge, CNIPTP:
	default:
		return fmt.Errorf("unknown cni %q (want %q or %q)", c.CNI, CNIBridge, CNIPTP)
	}
	if c.StateRoot == "" {
		c.StateRoot = DefaultStateRoot
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// DefaultStateRoot holds the run directories of clusters. It must not be a
// path weft's own components use on a node (they use /var/run/weft, which is
// /run/weft): a pod's hostPath mount there would hide the harness's files
// from the emulator's container mounts.
const DefaultStateRoot = "/run/weft-cluster"

// Addresses. Every cluster owns one /24 of underlayBase (its slot); pod and
// Service ranges live only inside the cluster's namespaces, so concurrent
// clusters can share them. The host routes only its clusters' underlay /24s.
const (
	maxSlots      = 64
	podCIDR       = "10.244.0.0/16"
	serviceCIDR   = "10.96.0.0/16"
	apiServiceIP  = "10.96.0.1"
	dnsServiceIP  = "10.96.0.10"
	clusterDomain = "cluster.local"
	apiPort       = 6443
)

// addressPlan is the set of addresses of one cluster slot.
type addressPlan struct{ slot int }

func (a addressPlan) underlay() netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("10.201.%d.0/24", a.slot))
}
func (a addressPlan) host() netip.Addr         { return a.at(1) }
func (a addressPlan) controlPlane() netip.Addr { return a.at(2) }
func (a addressPlan) node(i int) netip.Addr    { return a.at(10 + i) }
func (a addressPlan) at(n int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("10.201.%d.%d", a.slot, n))
}
func (a addressPlan) podCIDR(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i))
}
func (a addressPlan) apiServer() string {
	return fmt.Sprintf("https://%s:%d", a.controlPlane(), apiPort)
}
