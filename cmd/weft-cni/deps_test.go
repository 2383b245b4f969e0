package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps: the plugin is exec'd once per pod sandbox, on the pod's critical
// path, so it stays small and does only its one job.
func TestDeps(t *testing.T) {
	// A trailing "/..." bans the package and everything under it.
	banned := map[string]string{
		"github.com/cilium/ebpf/...":                    "loading and pinning eBPF is the agent's job, never the plugin's",
		"k8s.io/client-go/informers/...":                "the plugin reads the API server directly; caches are the agent's",
		"k8s.io/client-go/kubernetes":                   "the full clientset; the plugin needs only typed/core/v1",
		"github.com/weftmesh/weft/daemon/cniserver/...": "the agent's side of the protocol",
		"github.com/weftmesh/weft/tests/...":            "the test harness",
		"google.golang.org/grpc/...":                    "the plugin speaks HTTP/JSON to the agent",
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for pattern, why := range banned {
			prefix, tree := strings.CutSuffix(pattern, "/...")
			if dep == prefix || tree && strings.HasPrefix(dep, prefix+"/") {
				t.Errorf("weft-cni links %s: %s", dep, why)
			}
		}
	}
}
