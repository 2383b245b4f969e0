package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshpki "github.com/weftmesh/weft/internal/pki"
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
	// Short-lived workload certificates: they rotate during the test.
	oldCA, err := c.InstallMesh(ctx, "operator.enabled=true", "operator.certLifetime=20s")
	if err != nil {
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
		manifest := allPortsTarget(m.ns, "only-a", "server", "a")
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

	t.Run("CA rotation", func(t *testing.T) {
		testCARotation(t, m, oldCA, target)
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
		issued := func() int {
			return strings.Count(m.ztunnelLog(t, "node1"), `"msg":"certificate issued"`)
		}
		issuedBefore := issued()
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
		// 20 s certificates kept being renewed through the restart.
		if n := issued() - issuedBefore; n < 1 {
			t.Errorf("no certificate issued on node1 during the operator's restart and the 20 s after")
		}
	})
}

// testCARotation: a new root put into weft-ca reaches every node's trust
// bundle before anything is signed with it; a connection open across the
// switch survives and new connections work throughout.
func testCARotation(t *testing.T, m *meshApp, oldCA *cluster.MeshCA, target string) {
	c := m.c
	ctx := testCtx(t)
	newCert, newKey, err := meshpki.GenerateRoot("cluster.local", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(newCert)
	newRoot, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	holdCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	held := make(chan holdResult, 1)
	go func() { held <- m.holdFor(holdCtx, podOf(t, c, m.ns, "a-node0").Name, target, 45*time.Second) }()

	// New connections keep working while the CA switches.
	var failures []string
	probes := 0
	probe := func() {
		for _, cl := range []string{"a-node0", "a-node1"} {
			probes++
			if _, err := m.tcp(t, ctx, cl, target); err != nil {
				failures = append(failures, err.Error())
			}
		}
	}
	probe()
	sec, err := c.Client.CoreV1().Secrets(installNS).Get(ctx, "weft-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{"ca.crt": newCert, "ca.key": newKey, "extra-roots.crt": oldCA.CertPEM}
	if _, err := c.Client.CoreV1().Secrets(installNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	// The server's certificate, as s_client from node0 sees it, is signed
	// by the new root once the operator activated it.
	signedByNew := func() bool {
		out, _ := c.ExecNode(ctx, "node0", "sh", "-c", "sleep 0.3 | openssl s_client -connect "+target[:strings.LastIndex(target, ":")]+":15008 -tls1_3 -alpn h2 2>/dev/null")
		i := strings.Index(string(out), "-----BEGIN CERTIFICATE-----")
		if i < 0 {
			return false
		}
		b, _ := pem.Decode(out[i:])
		if b == nil {
			return false
		}
		leaf, err := x509.ParseCertificate(b.Bytes)
		return err == nil && leaf.CheckSignatureFrom(newRoot) == nil
	}
	var bundleSeen map[string]bool
	err = cluster.Poll(ctx, 90*time.Second, time.Second, "a workload certificate signed by the new root", func(ctx context.Context) (bool, string, error) {
		probe()
		if !signedByNew() {
			return false, "still the old root", nil
		}
		// Before anything was signed with the new root, every node held a
		// bundle with both roots.
		bundleSeen = map[string]bool{}
		for _, n := range c.Nodes() {
			for _, line := range strings.Split(m.ztunnelLog(t, n), "\n") {
				if strings.Contains(line, `"msg":"trust bundle changed"`) && strings.Count(line, "CN=") >= 2 {
					bundleSeen[n] = true
				}
			}
		}
		return true, "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new root in use %v after the Secret update; %d probes", time.Since(rotated).Round(time.Second), probes)
	for _, n := range c.Nodes() {
		if !bundleSeen[n] {
			t.Errorf("%s's ztunnel never logged a trust bundle with both roots before the new root signed", n)
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d new connections failed during the CA switch: %v", len(failures), probes, failures)
	}
	// The held connection was opened under the old root and outlives the
	// switch.
	if r := <-held; r.Error != "" {
		t.Errorf("connection open across the CA switch ended: %+v", r)
	}
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
