package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReleaseName is the Helm release name the harness installs weft as.
const ReleaseName = "weft"

// ChartDir is the path of weft's Helm chart in the checkout.
func ChartDir() (string, error) {
	repo, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(repo, "install", "helm", "weft"), nil
}

// HelmValues are the --set values every install of the chart on this
// cluster needs and a real cluster does not: one pin root per node (the
// nodes share a kernel) and the cluster's own cgroup for the agents'
// outbound programs (never the host's cgroup root).
func (c *Cluster) HelmValues() []string {
	return []string{"agent.pinRoot=" + c.WeftPinRoot(), "agent.cgroupPath=" + c.CgroupDir()}
}

// RunHelm runs the cached helm binary against this cluster (admin
// kubeconfig) and returns its combined output; a failure is an error
// carrying that output.
func (c *Cluster) RunHelm(ctx context.Context, args ...string) ([]byte, error) {
	helm, err := c.Helm()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, helm, append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// InstallChart runs `helm install` of weft's chart as release ReleaseName
// in WeftNamespace with the chart's defaults, HelmValues and then set (later
// values win), waits for Helm (--wait) and for weft-cni in every node's CNI
// chain when the chart installs it (cni.enabled, the default).
func (c *Cluster) InstallChart(ctx context.Context, set ...string) error {
	chart, err := ChartDir()
	if err != nil {
		return err
	}
	args := []string{"install", ReleaseName, chart, "-n", WeftNamespace, "--create-namespace", "--wait", "--timeout", "120s"}
	for _, s := range append(c.HelmValues(), set...) {
		args = append(args, "--set", s)
	}
	if _, err := c.RunHelm(ctx, args...); err != nil {
		return err
	}
	for _, s := range set {
		if s == "cni.enabled=false" {
			return nil
		}
	}
	return c.WaitCNIChained(ctx)
}

// CNIConflist is the path of a node's CNI network config, which weft-cni is
// chained into.
func (c *Cluster) CNIConflist(node string) string {
	return filepath.Join(c.NodeRoot(node), "etc", "cni", "net.d", "10-weft-pods.conflist")
}

// WaitCNIChained waits until every node's CNI config chains weft-cni.
func (c *Cluster) WaitCNIChained(ctx context.Context) error {
	return Poll(ctx, 60*time.Second, 200*time.Millisecond, "weft-cni chained on every node", func(ctx context.Context) (bool, string, error) {
		for _, n := range c.Nodes() {
			data, err := os.ReadFile(c.CNIConflist(n))
			if err != nil || !strings.Contains(string(data), `"weft-cni"`) {
				return false, n + " not yet", nil
			}
		}
		return true, "", nil
	})
}

// WaitDaemonSetRollout waits until the DaemonSet name in WeftNamespace has
// rolled out its current generation: every node runs an updated, ready pod
// and no old one is left (what `kubectl rollout status` waits for).
func (c *Cluster) WaitDaemonSetRollout(ctx context.Context, name string, timeout time.Duration) error {
	return Poll(ctx, timeout, 200*time.Millisecond, "daemonset "+name+" rolled out", func(ctx context.Context) (bool, string, error) {
		d, err := c.Client.AppsV1().DaemonSets(WeftNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		s := d.Status
		want := s.DesiredNumberScheduled
		done := s.ObservedGeneration >= d.Generation && want == int32(len(c.Nodes())) &&
			s.UpdatedNumberScheduled == want && s.NumberReady == want && s.NumberAvailable == want && s.CurrentNumberScheduled == want
		return done, fmt.Sprintf("generation %d observed %d, desired %d updated %d ready %d available %d",
			d.Generation, s.ObservedGeneration, want, s.UpdatedNumberScheduled, s.NumberReady, s.NumberAvailable), nil
	})
}
