package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps: the operator is a control-plane Deployment; it links nothing of
// the data path (STYLE.md: the operator must not link bpf/ or cilium/ebpf)
// and no other component.
func TestDeps(t *testing.T) {
	// A trailing "/..." bans the package and everything under it.
	banned := map[string]string{
		"github.com/cilium/ebpf/...":           "the operator never touches the kernel: eBPF is the agent's",
		"github.com/weftmesh/weft/bpf/...":     "the eBPF programs and loaders are the agent's",
		"github.com/weftmesh/weft/daemon/...":  "the agent is another component",
		"github.com/weftmesh/weft/ztunnel/...": "the node proxy is another component",
		"github.com/weftmesh/weft/l7proxy/...": "the waypoint is another component",
		"github.com/weftmesh/weft/tests/...":   "the test harness",
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages, want the operator's whole tree", len(deps))
	}
	for _, dep := range deps {
		for pattern, why := range banned {
			prefix, tree := strings.CutSuffix(pattern, "/...")
			if dep == prefix || tree && strings.HasPrefix(dep, prefix+"/") {
				t.Errorf("weft-operator links %s: %s", dep, why)
			}
		}
	}
}
