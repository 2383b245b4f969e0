package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps: the CLI runs on nodes and laptops next to the components it
// inspects; it talks to them (API server, pins, metrics) and never links
// them, so it stays small and cannot drift into doing their jobs.
func TestDeps(t *testing.T) {
	// A trailing "/..." bans the package and everything under it.
	banned := map[string]string{
		"github.com/weftmesh/weft/daemon/...":   "the agent: the CLI inspects it, never embeds it",
		"github.com/weftmesh/weft/ztunnel/...":  "the node proxy",
		"github.com/weftmesh/weft/l7proxy/...":  "the L7 proxy",
		"github.com/weftmesh/weft/operator/...": "the operator",
		"github.com/weftmesh/weft/tests/...":    "the test harness",
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 || deps[len(deps)-1] != "github.com/weftmesh/weft/cmd/weft" {
		t.Fatalf("go list -deps . listed %d packages, not ending in cmd/weft: the check would prove nothing", len(deps))
	}
	for _, dep := range deps {
		for pattern, why := range banned {
			prefix, tree := strings.CutSuffix(pattern, "/...")
			if dep == prefix || tree && strings.HasPrefix(dep, prefix+"/") {
				t.Errorf("weft links %s: %s", dep, why)
			}
		}
	}
}
