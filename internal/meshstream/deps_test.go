package meshstream_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps: the package links into the operator, the agent and ztunnel
// alike, so it pulls in none of them, nor client-go (ztunnel must not link
// it) or the test harness.
func TestDeps(t *testing.T) {
	banned := map[string]string{
		"k8s.io/client-go/":                      "ztunnel never talks to the API server",
		"github.com/weftmesh/weft/daemon/":       "a component",
		"github.com/weftmesh/weft/ztunnel/":      "a component",
		"github.com/weftmesh/weft/operator/":     "a component",
		"github.com/weftmesh/weft/l7proxy/":      "a component",
		"github.com/weftmesh/weft/tests/":        "the test harness",
		"github.com/weftmesh/weft/internal/sys/": "no kernel access here",
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for prefix, why := range banned {
			if strings.HasPrefix(dep+"/", prefix) {
				t.Errorf("meshstream links %s: %s", dep, why)
			}
		}
	}
}
