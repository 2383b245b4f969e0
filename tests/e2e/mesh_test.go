package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/tests/cluster"
	"github.com/weftmesh/weft/tests/recordproxy"
)

const installNS = "weft-system"

// installWeft installs the chart with helm, as a user would, plus the
// recording stand-in for the node proxy (a test-only DaemonSet), and waits
// for both on every node. Every node's agent gets its own pin root and
// attaches to the cluster's own cgroup, since the emulated nodes share one
// kernel.
func installWeft(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	ctx := testCtx(t)
	helm, err := c.Helm()
	if err != nil {
		t.Fatal(err)
	}
	repo, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	pinRoot := strings.TrimSuffix(c.PinRoot("NODE"), "NODE") + "$(NODE_NAME)"
	cmd := exec.CommandContext(ctx, helm, "--kubeconfig", c.Kubeconfig(), "install", "weft",
		filepath.Join(repo, "install", "helm", "weft"), "-n", installNS, "--create-namespace",
		"--set", "agent.pinRoot="+pinRoot, "--set", "agent.cgroupPath="+c.CgroupDir(),
		"--wait", "--timeout", "120s")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	labels := map[string]string{"app": "weft-recordproxy"}
	hostPathDir := corev1.HostPathDirectoryOrCreate
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-recordproxy", Namespace: installNS},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork:                   true,
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{{
						Name:  "proxy",
						Image: cluster.ImageRegistry + "/weft-recordproxy:dev",
						Args: []string{"--socket", "/var/run/weft/ztunnel.sock", "--record-file", "/var/run/weft/records.jsonl",
							"--mark", "1337", "--orig-dst-map", pinRoot},
						Env:             []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
						SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "sockets", MountPath: "/var/run/weft"},
							{Name: "bpffs", MountPath: "/sys/fs/bpf"},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "sockets", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/weft", Type: &hostPathDir}}},
						{Name: "bpffs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/sys/fs/bpf"}}},
					},
				},
			},
		},
	}
	if _, err := c.Client.AppsV1().DaemonSets(installNS).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "recordproxy on every node", func(ctx context.Context) (bool, string, error) {
		d, err := c.Client.AppsV1().DaemonSets(installNS).Get(ctx, "weft-recordproxy", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return d.Status.NumberReady == int32(len(c.Nodes())), fmt.Sprintf("%d ready", d.Status.NumberReady), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// records reads what a node's recording proxy saw.
func records(t *testing.T, c *cluster.Cluster, node string) []recordproxy.Record {
	t.Helper()
	f, err := os.Open(filepath.Join(c.NodeRoot(node), "var", "run", "weft", "records.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []recordproxy.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r recordproxy.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err == nil {
			out = append(out, r)
		}
	}
	return out
}

func findRecord(rs []recordproxy.Record, listener string, pod types.UID, origDst string) *recordproxy.Record {
	for i := range rs {
		r := &rs[i]
		if r.Listener == listener && r.PodUID == string(pod) && r.OrigDst == origDst {
			return r
		}
	}
	return nil
}

func labelNamespace(t *testing.T, c *cluster.Cluster, ns, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"weft.io/mesh":%s}}}`, value)
	if _, err := c.Client.CoreV1().Namespaces().Patch(testCtx(t), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
}

// TestEnrollByLabel: helm-installed agents; labelling a namespace redirects
// its running pods' outbound TCP to the node proxy, with the right original
// destination and source pod, without restarting them; DNS over UDP is not
// redirected; unlabelling stops it. With both reference CNIs.
func TestEnrollByLabel(t *testing.T) {
	for _, cni := range []cluster.CNI{cluster.CNIBridge, cluster.CNIPTP} {
		t.Run(string(cni), func(t *testing.T) {
			c := cluster.StartForTest(t, cluster.Config{Nodes: 2, CNI: cni})
			ctx := testCtx(t)
			installWeft(t, c)
			createNamespace(t, c, "backend")
			createNamespace(t, c, "shop")
			echoDeployment(t, c, "backend", "echo", "node0", 1)
			if _, err := c.Client.CoreV1().Pods("shop").Create(ctx, sleepPod("client", "node1"), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			client := waitPodRunning(t, c, "shop", "client")
			var echoIP string
			if err := cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "echo ready", func(ctx context.Context) (bool, string, error) {
				eps := readyEndpoints(ctx, t, c, "backend", "echo")
				for _, ip := range eps {
					echoIP = ip
				}
				return len(eps) == 1, fmt.Sprint(eps), nil
			}); err != nil {
				t.Fatal(err)
			}
			target := echoIP + ":8080"
			if got := httpGet(t, c, "shop", "client", "http://"+target+"/", 1); got.OK != 1 {
				t.Fatalf("direct GET before enrollment failed: %+v", got)
			}
			if r := findRecord(records(t, c, "node1"), recordproxy.ListenerOutbound, client.UID, target); r != nil {
				t.Fatalf("connection recorded before the namespace was labelled: %+v", r)
			}

			labelled := time.Now()
			labelNamespace(t, c, "shop", `"enabled"`)
			var rec *recordproxy.Record
			err := cluster.Poll(ctx, 10*time.Second, 100*time.Millisecond, "outbound connection through the node proxy", func(ctx context.Context) (bool, string, error) {
				got := httpGetAllowFail(t, c, "shop", "client", "http://"+target+"/", 1)
				rec = findRecord(records(t, c, "node1"), recordproxy.ListenerOutbound, client.UID, target)
				return rec != nil && got.OK == 1, fmt.Sprintf("GET %+v, record %v", got, rec), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("redirected %s after the label", time.Since(labelled).Round(time.Millisecond))
			if rec.Namespace != "shop" || rec.PodName != "client" {
				t.Errorf("record names pod %s/%s, want shop/client", rec.Namespace, rec.PodName)
			}
			// The pod was not restarted.
			p, err := c.Client.CoreV1().Pods("shop").Get(ctx, "client", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if n := p.Status.ContainerStatuses[0].RestartCount; n != 0 || p.UID != client.UID {
				t.Errorf("client pod restarted (%d) or replaced", n)
			}
			// DNS over UDP is not redirected: the name still resolves, and the
			// TCP connection to the VIP it resolves to is.
			svc, err := c.Client.CoreV1().Services("backend").Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// (kube-proxy programs the new Service's endpoints asynchronously.)
			waitReachable(t, c, "shop", "client", "http://echo.backend.svc.cluster.local/")
			if findRecord(records(t, c, "node1"), recordproxy.ListenerOutbound, client.UID, svc.Spec.ClusterIP+":80") == nil {
				t.Errorf("connection to the Service VIP was not redirected")
			}
			for _, r := range records(t, c, "node1") {
				if strings.HasSuffix(r.OrigDst, ":53") {
					t.Errorf("DNS was redirected: %+v", r)
				}
			}

			labelNamespace(t, c, "shop", "null")
			err = cluster.Poll(ctx, 10*time.Second, 200*time.Millisecond, "redirection off after unlabel", func(ctx context.Context) (bool, string, error) {
				before := len(records(t, c, "node1"))
				got := httpGetAllowFail(t, c, "shop", "client", "http://"+target+"/", 1)
				return got.OK == 1 && len(records(t, c, "node1")) == before, fmt.Sprintf("%+v", got), nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
