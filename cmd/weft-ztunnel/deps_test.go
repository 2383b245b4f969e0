package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps: the node proxy runs on every node with access to every pod's
// netns; it links nothing it does not need (STYLE.md: ztunnel must not link
// client-go) and no other component.
func TestDeps(t *testing.T) {
	// A trailing "/..." bans the package and everything under it.
	banned := map[string]string{
		"k8s.io/client-go/...":                  "ztunnel never talks to the API server: pods come from the agent, state from its config",
		"github.com/weftmesh/weft/daemon/...":   "the agent is another component",
		"github.com/weftmesh/weft/operator/...": "the operator is another component",
		"github.com/weftmesh/weft/l7proxy/...":  "the waypoint is another component",
		"github.com/weftmesh/weft/tests/...":    "the test harness",
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for pattern, why := range banned {
			prefix, tree := strings.CutSuffix(pattern, "/...")
			if dep == prefix || tree && strings.HasPrefix(dep, prefix+"/") {
				t.Errorf("weft-ztunnel links %s: %s", dep, why)
			}
		}
	}
}
