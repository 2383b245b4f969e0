package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDispatch: the runtime's invocation (CNI_COMMAND set) is always the
// plugin, even with arguments; arguments without CNI_COMMAND are the
// installer's CLI.
func TestDispatch(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "weft-cni")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{nil, {"install"}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
		cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
		out, err := cmd.Output()
		var v struct {
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err != nil || json.Unmarshal(out, &v) != nil || len(v.SupportedVersions) == 0 {
			t.Errorf("CNI_COMMAND=VERSION weft-cni %v = %q, %v; want the plugin's version JSON", args, out, err)
		}
	}
	out, err := exec.Command(bin, "install", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--cni-conf-dir") {
		t.Errorf("weft-cni install --help = %q, %v; want the installer's usage", out, err)
	}
	cmd := exec.Command(bin, "uninstall", "--cni-conf-dir", t.TempDir(), "--cni-bin-dir", t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("weft-cni uninstall of a node without weft-cni = %v\n%s", err, out)
	}
}
