package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftmesh/weft/tests/cluster"
	"github.com/weftmesh/weft/tests/recordproxy"
)

// cgroupPrograms counts the programs attached to the cluster's cgroup at a
// hook: one per node agent, never more.
func cgroupPrograms(t *testing.T, c *cluster.Cluster, attach ebpf.AttachType) int {
	t.Helper()
	f, err := os.Open(c.CgroupDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: attach})
	if err != nil {
		t.Fatalf("query %v programs: %v", attach, err)
	}
	return len(res.Programs)
}

func agentPod(t *testing.T, c *cluster.Cluster, node string) *corev1.Pod {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(installNS).List(testCtx(t), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-agent"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if pods.Items[i].Spec.NodeName == node {
			return &pods.Items[i]
		}
	}
	t.Fatalf("no weft-agent pod on %s", node)
	return nil
}

// redirected makes a fresh connection from a pod and reports whether the
// node proxy recorded it.
func redirected(t *testing.T, c *cluster.Cluster, node, ns, pod string, uid string, target string) bool {
	t.Helper()
	before := countRecords(records(t, c, node), recordproxy.ListenerOutbound, types.UID(uid), target)
	got := httpGetAllowFail(t, c, ns, pod, "http://"+target+"/", 1)
	if got.OK != 1 {
		t.Errorf("GET %s from %s/%s failed: %+v", target, ns, pod, got)
	}
	return countRecords(records(t, c, node), recordproxy.ListenerOutbound, types.UID(uid), target) > before
}

// TestAgentRestartAndCleanup: kill -9 of an agent does not stop redirection,
// and the restarted agent reconciles without attaching twice or losing an
// enrollment; `weft-agent --cleanup` on one node removes exactly that node's
// datapath.
func TestAgentRestartAndCleanup(t *testing.T) {
	for _, cni := range []cluster.CNI{cluster.CNIBridge, cluster.CNIPTP} {
		t.Run(string(cni), func(t *testing.T) { testAgentRestartAndCleanup(t, cni) })
	}
}

func testAgentRestartAndCleanup(t *testing.T, cni cluster.CNI) {
	c := cluster.StartForTest(t, cluster.Config{Nodes: 2, CNI: cni})
	ctx := testCtx(t)
	installWeft(t, c)
	createNamespace(t, c, "backend")
	createNamespace(t, c, "shop")
	echoDeployment(t, c, "backend", "echo", "node0", 1)
	for _, n := range []string{"node0", "node1"} {
		if _, err := c.Client.CoreV1().Pods("shop").Create(ctx, sleepPod("client-"+n, n), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var echoIP string
	if err := cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "echo ready", func(ctx context.Context) (bool, string, error) {
		for _, ip := range readyEndpoints(ctx, t, c, "backend", "echo") {
			echoIP = ip
		}
		return echoIP != "", "", nil
	}); err != nil {
		t.Fatal(err)
	}
	target := echoIP + ":8080"
	uids := map[string]string{}
	for _, n := range []string{"node0", "node1"} {
		uids[n] = string(waitPodRunning(t, c, "shop", "client-"+n).UID)
	}
	labelNamespace(t, c, "shop", `"enabled"`)
	for _, n := range []string{"node0", "node1"} {
		if err := cluster.Poll(ctx, 10*time.Second, 100*time.Millisecond, "client-"+n+" redirected", func(ctx context.Context) (bool, string, error) {
			return redirected(t, c, n, "shop", "client-"+n, uids[n], target), "", nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := cgroupPrograms(t, c, ebpf.AttachCGroupInet4Connect); n != 2 {
		t.Fatalf("connect4 programs on the cluster cgroup = %d, want 2 (one per node agent)", n)
	}

	t.Run("kill -9 of the agent", func(t *testing.T) {
		old := agentPod(t, c, "node1")
		pid, err := c.ContainerPID(ctx, installNS, old.Name, "agent")
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Pinned programs keep redirecting while no agent runs.
		if !redirected(t, c, "node1", "shop", "client-node1", uids["node1"], target) {
			t.Errorf("redirection stopped when the agent died")
		}
		err = cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "agent restarted and ready", func(ctx context.Context) (bool, string, error) {
			p := agentPod(t, c, "node1")
			if len(p.Status.ContainerStatuses) == 0 {
				return false, "no status", nil
			}
			cs := p.Status.ContainerStatuses[0]
			return cs.RestartCount >= 1 && cs.Ready, fmt.Sprintf("restarts %d ready %v", cs.RestartCount, cs.Ready), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, hook := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect, ebpf.AttachCGroupSockOps} {
			if n := cgroupPrograms(t, c, hook); n != 2 {
				t.Errorf("%v programs after the restart = %d, want 2", hook, n)
			}
		}
		// No enrollment lost: the metric, the old pod and a new pod.
		err = cluster.Poll(ctx, 20*time.Second, 200*time.Millisecond, "enrolled pods metric", func(ctx context.Context) (bool, string, error) {
			out, err := c.ExecNode(ctx, "node1", "curl", "-sS", "--max-time", "2", "http://127.0.0.1:15021/metrics")
			return err == nil && strings.Contains(string(out), "weft_agent_enrolled_pods 1\n"), grepLines(string(out), "enrolled_pods"), nil
		})
		if err != nil {
			t.Error(err)
		}
		if !redirected(t, c, "node1", "shop", "client-node1", uids["node1"], target) {
			t.Errorf("pod enrolled before the restart is no longer redirected")
		}
		if _, err := c.Client.CoreV1().Pods("shop").Create(ctx, sleepPod("late", "node1"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		late := waitPodRunning(t, c, "shop", "late")
		if err := cluster.Poll(ctx, 10*time.Second, 100*time.Millisecond, "new pod redirected", func(ctx context.Context) (bool, string, error) {
			return redirected(t, c, "node1", "shop", "late", string(late.UID), target), "", nil
		}); err != nil {
			t.Error(err)
		}
	})

	t.Run("--cleanup on one node", func(t *testing.T) {
		// node0's agent stopped, not uninstalled (its DaemonSet moved off
		// the node): its pins and CNI entry stay and redirection continues ...
		patch := []byte(`{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":"node1"}}}}}`)
		if _, err := c.Client.AppsV1().DaemonSets(installNS).Patch(ctx, "weft-agent", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("move the agent DaemonSet off node0: %v", err)
		}
		if err := cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "weft-agent gone from node0", func(ctx context.Context) (bool, string, error) {
			pods, err := c.Client.CoreV1().Pods(installNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-agent", FieldSelector: "spec.nodeName=node0"})
			if err != nil {
				return false, err.Error(), nil
			}
			return len(pods.Items) == 0, fmt.Sprintf("%d agent pods on node0", len(pods.Items)), nil
		}); err != nil {
			t.Fatal(err)
		}
		if !redirected(t, c, "node0", "shop", "client-node0", uids["node0"], target) {
			t.Errorf("stopping node0's agent (no uninstall) stopped redirection before any cleanup")
		}
		if conf, _ := os.ReadFile(c.NodeRoot("node0") + "/etc/cni/net.d/10-weft-pods.conflist"); !strings.Contains(string(conf), "weft-cni") {
			t.Errorf("stopping node0's agent (no uninstall) removed weft-cni from its CNI config:\n%s", conf)
		}
		// ... until --cleanup removes node0's datapath, and only node0's.
		agentBin := c.BinDir() + "/weft-agent"
		root := c.NodeRoot("node0")
		if out, err := c.ExecNode(ctx, "node0", agentBin, "--cleanup", "--pin-root", c.PinRoot("node0"), "--cgroup-path", c.CgroupDir(),
			"--cni-install", "--cni-conf-dir", root+"/etc/cni/net.d", "--cni-bin-dir", root+"/opt/cni/bin"); err != nil {
			t.Fatalf("weft-agent --cleanup: %v\n%s", err, out)
		}
		conf, _ := os.ReadFile(root + "/etc/cni/net.d/10-weft-pods.conflist")
		if strings.Contains(string(conf), "weft-cni") {
			t.Errorf("node0's CNI config still chains weft-cni after --cleanup:\n%s", conf)
		}
		for _, f := range []string{root + "/opt/cni/bin/weft-cni", root + "/etc/cni/net.d/weft-cni.kubeconfig"} {
			if _, err := os.Stat(f); !os.IsNotExist(err) {
				t.Errorf("%s left after --cleanup", f)
			}
		}
		if conf1, _ := os.ReadFile(c.NodeRoot("node1") + "/etc/cni/net.d/10-weft-pods.conflist"); !strings.Contains(string(conf1), "weft-cni") {
			t.Errorf("node0's cleanup removed weft-cni from node1")
		}
		if _, err := os.Stat(c.PinRoot("node0")); !os.IsNotExist(err) {
			entries, _ := os.ReadDir(c.PinRoot("node0"))
			t.Errorf("node0 pin root still there after --cleanup (%v): %v", err, entries)
		}
		if _, err := os.Stat(c.PinRoot("node1")); err != nil {
			t.Errorf("node1 pin root: %v", err)
		}
		if n := cgroupPrograms(t, c, ebpf.AttachCGroupInet4Connect); n != 1 {
			t.Errorf("connect4 programs after node0's cleanup = %d, want 1 (node1's)", n)
		}
		if redirected(t, c, "node0", "shop", "client-node0", uids["node0"], target) {
			t.Errorf("node0 still redirects after --cleanup")
		}
		if !redirected(t, c, "node1", "shop", "client-node1", uids["node1"], target) {
			t.Errorf("node1 stopped redirecting after node0's --cleanup")
		}
	})
}
