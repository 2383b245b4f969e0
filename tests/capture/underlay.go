package capture

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// UnderlayInterface is the bridge in a cluster's underlay namespace that
// joins the control plane, every node and the host (tests/cluster's
// setupNetwork). Every packet between two nodes — pod to pod across nodes,
// HBONE included — is forwarded by it, and a promiscuous capture on it sees
// each such frame once.
const UnderlayInterface = "br0"

// Cluster is what Underlay needs of a local cluster; *cluster.Cluster
// (package tests/cluster) has it.
type Cluster interface {
	// Nodes returns the node names.
	Nodes() []string
	// NodeNetns is the name of a node's network namespace.
	NodeNetns(node string) string
}

// UnderlayNetns is the name (under /run/netns) of a cluster's underlay
// namespace. The harness names every namespace "<prefix><run ID>-<what>"
// and the underlay's <what> is "ul"; the name is derived from a node's
// namespace because the harness does not export it.
func UnderlayNetns(c Cluster) string {
	node := c.Nodes()[0]
	return strings.TrimSuffix(c.NodeNetns(node), node) + "ul"
}

// Underlay starts a capture of a cluster's underlay bridge: the traffic
// between its nodes (and between the host, the control plane and the nodes).
// Filter it to what the test is about, e.g. "tcp and net 10.244.0.0/16"
// for pod traffic or "tcp port 15008" for HBONE.
func Underlay(ctx context.Context, tb testing.TB, c Cluster, bpfFilter string) (*Capture, error) {
	tb.Helper()
	ns := UnderlayNetns(c)
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
		return nil, fmt.Errorf("find underlay netns: %w", err)
	}
	return Start(ctx, tb, ns, UnderlayInterface, bpfFilter)
}
