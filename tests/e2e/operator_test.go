package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/tests/cluster"
)

// TestOperator: with the operator enabled, the node proxies take their mesh
// state and certificates from it; an SMI TrafficTarget applied with kubectl
// is enforced on both nodes within 10 s and reported in its status; killing
// the operator does not stop meshed traffic, and the restarted operator
// resyncs the nodes to the same state.
func TestOperator(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Config{Nodes: 2})
	ctx := testCtx(t)
	if _, err := c.InstallMesh(ctx, "operator.enabled=true"); err != nil {
		t.Fatal(err)
	}
	m := &meshApp{c: c, ns: "ops"}
	createNamespace(t, c, m.ns)
	labelNamespace(t, c, m.ns, `"enabled"`)
	for _, sa := range []string{"a", "b", "server"} {
		serviceAccount(t, c, m.ns, sa)
	}
	deployment(t, c, m.ns, "server", "server", "node1", tcpEchoContainer())
	for _, n := range []string{"node0", "node1"} {
		deployment(t, c, m.ns, "a-"+n, "a", n, sleepContainer())
		deployment(t, c, m.ns, "b-"+n, "b", n, sleepContainer())
	}
	server := podOf(t, c, m.ns, "server")
	target := server.Status.PodIP + ":9000"
	clients := []string{"a-node0", "a-node1", "b-node0", "b-node1"}
	for _, cl := range clients {
		podOf(t, c, m.ns, cl)
	}
	// Meshed through the operator's config: the server's ztunnel counts
	// connections from every client.
	for _, cl := range clients {
		err := cluster.Poll(ctx, 30*time.Second, 300*time.Millisecond, cl+" meshed", func(ctx context.Context) (bool, string, error) {
			before := m.opened(t, "node1", cl, "server")
			if _, err := m.tcp(t, ctx, cl, target); err != nil {
				return false, err.Error(), nil
			}
			return m.opened(t, "node1", cl, "server") > before, "not counted by the server's ztunnel", nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	t.Run("TrafficTarget enforced on both nodes within 10s", func(t *testing.T) {
		manifest := fmt.Sprintf(`apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: all-ports, namespace: %[1]s}
spec:
  matches: {ports: []}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: only-a, namespace: %[1]s}
spec:
  destination: {kind: ServiceAccount, name: server, namespace: %[1]s}
  sources:
  - {kind: ServiceAccount, name: a, namespace: %[1]s}
  rules:
  - {kind: TCPRoute, name: all-ports}
`, m.ns)
		start := time.Now()
		kubectlApply(t, c, manifest)
		err := cluster.Poll(ctx, 10*time.Second, 100*time.Millisecond, "b refused on both nodes", func(ctx context.Context) (bool, string, error) {
			for _, cl := range []string{"b-node0", "b-node1"} {
				if _, err := m.tcp(t, ctx, cl, target); err == nil {
					return false, cl + " still allowed", nil
				}
			}
			return true, "", nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TrafficTarget enforced on both nodes %v after kubectl apply", time.Since(start).Round(time.Millisecond))
		for _, cl := range []string{"a-node0", "a-node1"} {
			if _, err := m.tcp(t, ctx, cl, target); err != nil {
				t.Errorf("%s refused under a TrafficTarget that allows it: %v", cl, err)
			}
		}
		out := kubectl(t, c, "-n", m.ns, "get", "traffictargets")
		if !strings.Contains(out, "only-a") || !strings.Contains(out, "True") {
			t.Errorf("kubectl get traffictargets does not show only-a as accepted:\n%s", out)
		}
	})

	t.Run("operator killed: traffic flows, nodes resync", func(t *testing.T) {
		versions := func() []string {
			var vs []string
			for _, n := range c.Nodes() {
				for _, line := range strings.Split(m.metrics(t, n), "\n") {
					if strings.HasPrefix(line, "weft_ztunnel_config_info{") {
						vs = append(vs, line)
					}
				}
			}
			return vs
		}
		before := versions()
		holdCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan holdResult, 1)
		go func() { done <- m.holdFor(holdCtx, podOf(t, c, m.ns, "a-node0").Name, target, 20*time.Second) }()

		pods, err := c.Client.CoreV1().Pods(installNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-operator"})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("operator pods: %v, %v", pods, err)
		}
		op := pods.Items[0]
		pid, err := c.ContainerPID(ctx, installNS, op.Name, "operator")
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// While it is down (or restarting), meshed traffic keeps flowing.
		for _, cl := range []string{"a-node0", "a-node1"} {
			if _, err := m.tcp(t, ctx, cl, target); err != nil {
				t.Errorf("%s could not connect with the operator down: %v", cl, err)
			}
		}
		err = cluster.Poll(ctx, 60*time.Second, 300*time.Millisecond, "operator restarted and ready", func(ctx context.Context) (bool, string, error) {
			p, err := c.Client.CoreV1().Pods(installNS).Get(ctx, op.Name, metav1.GetOptions{})
			if err != nil || len(p.Status.ContainerStatuses) == 0 {
				return false, fmt.Sprint(err), nil
			}
			cs := p.Status.ContainerStatuses[0]
			return cs.RestartCount >= 1 && cs.Ready, fmt.Sprintf("restarts %d ready %v", cs.RestartCount, cs.Ready), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Versions are content hashes: a resynced node serves exactly the
		// version it served before (the cluster did not change).
		err = cluster.Poll(ctx, 20*time.Second, 300*time.Millisecond, "nodes resynced", func(ctx context.Context) (bool, string, error) {
			after := versions()
			return strings.Join(after, "|") == strings.Join(before, "|"), fmt.Sprintf("before %v after %v", before, after), nil
		})
		if err != nil {
			t.Error(err)
		}
		// A change after the restart reaches the nodes: removing the
		// TrafficTarget lets b in again.
		kubectl(t, c, "-n", m.ns, "delete", "traffictarget", "only-a")
		err = cluster.Poll(ctx, 10*time.Second, 100*time.Millisecond, "b allowed again", func(ctx context.Context) (bool, string, error) {
			_, err := m.tcp(t, ctx, "b-node0", target)
			return err == nil, fmt.Sprint(err), nil
		})
		if err != nil {
			t.Error(err)
		}
		if r := <-done; r.Error != "" {
			t.Errorf("connection held across the operator's restart ended: %+v", r)
		}
	})
}

func kubectl(t *testing.T, c *cluster.Cluster, args ...string) string {
	t.Helper()
	k, err := c.Kubectl()
	if err != nil {
		t.Fatal(err)
	}
	out, err := execCommand(testCtx(t), k, append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func kubectlApply(t *testing.T, c *cluster.Cluster, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(t, c, "apply", "-f", f)
}
