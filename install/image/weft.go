package image

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Weft is weft's images, the names the chart's "weft.image" helper uses
// (install/helm/weft/templates/_helpers.tpl). The node components run as
// root; the chart, not the image, grants their privileges:
//
//   - weft-agent loads and pins eBPF programs, attaches them to cgroups and
//     pod netns (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, hostPID, bpffs and
//     /proc from the host: the chart runs it privileged).
//   - weft-ztunnel enters pod network namespaces (setns: CAP_SYS_ADMIN),
//     marks its sockets (SO_MARK: CAP_NET_ADMIN) and reads a pinned map
//     (CAP_BPF). The chart adds exactly these three to an otherwise dropped
//     set; Kubernetes gives added capabilities to uid 0 only (non-root
//     processes would need ambient capabilities), so the image runs as root.
//   - weft-cni is the CNI plugin and its installer: the chart's install-cni
//     container runs `weft-cni install`, which copies the binary into the
//     node's CNI bin dir and edits the conflist, both owned by root (no
//     capability needed). (`weft-agent --cni-install` would look for
//     weft-cni beside itself; the chart does not use it, so the agent image
//     does not carry the plugin.)
//
// weft-operator and the weft CLI need nothing from the node and run as the
// nonroot user 65532.
var Weft = []Spec{
	{
		Name:        "weft-agent",
		Description: "weft node agent: eBPF redirection and pod enrollment (DaemonSet weft-agent; needs root and the chart's privileges)",
		Binaries:    []string{"weft-agent"},
		Entrypoint:  "weft-agent",
		User:        Root,
	},
	{
		Name:        "weft-ztunnel",
		Description: "weft node proxy: per-pod listeners, HBONE mTLS, L4 policy and telemetry (DaemonSet weft-ztunnel; needs root and the chart's privileges)",
		Binaries:    []string{"weft-ztunnel"},
		Entrypoint:  "weft-ztunnel",
		User:        Root,
	},
	{
		Name:        "weft-operator",
		Description: "weft operator: mesh CA, SMI controllers, per-node config (Deployment weft-operator)",
		Binaries:    []string{"weft-operator"},
		Entrypoint:  "weft-operator",
		User:        NonRoot,
	},
	{
		Name:        "weft-cni",
		Description: "weft's chained CNI plugin and its installer, `weft-cni install` (the weft-agent pod's install-cni container; root for the node's CNI dirs)",
		Binaries:    []string{"weft-cni"},
		Entrypoint:  "weft-cni",
		User:        Root,
	},
	{
		Name:        "weft",
		Description: "weft CLI: observe, stat, check, status, version",
		Binaries:    []string{"weft"},
		Entrypoint:  "weft",
		User:        NonRoot,
	},
}

// Packages returns the main packages (./cmd/<binary>) that specs need.
func Packages(specs []Spec) []string {
	seen := map[string]bool{}
	var pkgs []string
	for _, s := range specs {
		for _, b := range s.Binaries {
			if !seen[b] {
				seen[b] = true
				pkgs = append(pkgs, "./cmd/"+b)
			}
		}
	}
	return pkgs
}

// ChartAppVersion returns the appVersion of the Helm chart at chartDir: the
// tag the chart's image references default to.
func ChartAppVersion(chartDir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", fmt.Errorf("read chart: %w", err)
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(raw, &chart); err != nil {
		return "", fmt.Errorf("parse %s: %w", filepath.Join(chartDir, "Chart.yaml"), err)
	}
	if chart.AppVersion == "" {
		return "", fmt.Errorf("%s: no appVersion", filepath.Join(chartDir, "Chart.yaml"))
	}
	return chart.AppVersion, nil
}
