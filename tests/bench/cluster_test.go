//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/tests/cluster"
	"github.com/weftmesh/weft/tests/recordproxy"
)

// These helpers mirror tests/e2e (a test package cannot be imported): the
// same helm install of the chart plus the recording stand-in for the node
// proxy.

const (
	installNS = "weft-system"
	testapp   = "/weft-testapp" // command[0]; the emulator maps it to the image's binary
)

func appBinary(c *cluster.Cluster) string { return filepath.Join(c.BinDir(), "weft-testapp") }

// installWeft helm-installs the chart and the recording proxy DaemonSet and
// waits for both on every node.
func installWeft(ctx context.Context, tb testing.TB, c *cluster.Cluster) {
	tb.Helper()
	if err := c.InstallWeft(ctx); err != nil {
		tb.Fatal(err)
	}
}

// uninstallWeft removes everything installWeft added, down to the kernel:
// helm uninstall makes the agents remove their pins as they stop (the
// chart's pre-delete hook); `weft-agent --cleanup` on each node then
// proves nothing is left and removes what a killed agent might have left.
func uninstallWeft(ctx context.Context, tb testing.TB, c *cluster.Cluster) {
	tb.Helper()
	err := c.Client.AppsV1().DaemonSets(installNS).Delete(ctx, "weft-recordproxy", metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		tb.Fatal(err)
	}
	helm, err := c.Helm()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, helm, "--kubeconfig", c.Kubeconfig(), "uninstall", "weft", "-n", installNS, "--wait", "--timeout", "120s")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	err = cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "weft pods gone", func(ctx context.Context) (bool, string, error) {
		pods, err := c.Client.CoreV1().Pods(installNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods left", len(pods.Items)), nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	agent := filepath.Join(c.BinDir(), "weft-agent")
	for _, node := range c.Nodes() {
		out, err := exec.CommandContext(ctx, agent, "--cleanup", "--pin-root", c.PinRoot(node), "--cgroup-path", c.CgroupDir()).CombinedOutput()
		if err != nil {
			tb.Fatalf("weft-agent --cleanup on %s: %v\n%s", node, err, out)
		}
	}
	if out, err := exec.CommandContext(ctx, "bpftool", "cgroup", "show", c.CgroupDir()).CombinedOutput(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		tb.Fatalf("programs still attached to %s after cleanup:\n%s", c.CgroupDir(), out)
	}
}

// createNamespace creates a namespace and waits for its default
// ServiceAccount, without which pods are refused.
func createNamespace(ctx context.Context, tb testing.TB, c *cluster.Cluster, name string) {
	tb.Helper()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("create namespace %s: %v", name, err)
	}
	err := cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, "default ServiceAccount in "+name, func(ctx context.Context) (bool, string, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err), nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// deleteNamespace deletes a namespace and waits until it is gone, so that
// its pods no longer take node capacity.
func deleteNamespace(ctx context.Context, tb testing.TB, c *cluster.Cluster, name string) {
	tb.Helper()
	if err := c.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		tb.Fatalf("delete namespace %s: %v", name, err)
	}
	err := cluster.Poll(ctx, 5*time.Minute, 500*time.Millisecond, "namespace "+name+" gone", func(ctx context.Context) (bool, string, error) {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		pods, _ := c.Client.CoreV1().Pods(name).List(ctx, metav1.ListOptions{})
		n := 0
		if pods != nil {
			n = len(pods.Items)
		}
		return false, fmt.Sprintf("%v, %d pods left", err, n), nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func labelNamespace(ctx context.Context, c *cluster.Cluster, ns, value string) error {
	patch := fmt.Sprintf(`{"metadata":{"labels":{"weft.io/mesh":%s}}}`, value)
	_, err := c.Client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("label namespace %s: %w", ns, err)
	}
	return nil
}

func podEnv() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	return []corev1.EnvVar{
		field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"),
		field("NODE_NAME", "spec.nodeName"), field("POD_IP", "status.podIP"),
	}
}

// appPod is a bare pod running the test app with args, pinned to node.
func appPod(name, node string, port int32, args ...string) *corev1.Pod {
	ctr := corev1.Container{
		Name: "main", Image: cluster.TestAppImage + ":dev", Command: []string{testapp}, Args: args, Env: podEnv(),
	}
	if port != 0 {
		ctr.Ports = []corev1.ContainerPort{{Name: "app", ContainerPort: port}}
		ctr.ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("app")}},
			PeriodSeconds: 1,
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers:                    []corev1.Container{ctr},
		},
	}
}

// runPod creates a pod and waits until it is Ready (or Running, without a
// readiness probe); it returns the pod as last seen.
func runPod(ctx context.Context, tb testing.TB, c *cluster.Cluster, ns string, pod *corev1.Pod) *corev1.Pod {
	tb.Helper()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("create pod %s/%s: %v", ns, pod.Name, err)
	}
	var last *corev1.Pod
	err := cluster.Poll(ctx, 90*time.Second, 100*time.Millisecond, "pod "+ns+"/"+pod.Name+" ready", func(ctx context.Context) (bool, string, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		last = p
		return podUp(p), fmt.Sprintf("phase %s, statuses %+v", p.Status.Phase, p.Status.ContainerStatuses), nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return last
}

// podUp: Running with every container running and, if it has readiness
// probes, Ready.
func podUp(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
		return false
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Running == nil {
			return false
		}
	}
	for _, ctr := range p.Spec.Containers {
		if ctr.ReadinessProbe != nil {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady {
					return cond.Status == corev1.ConditionTrue
				}
			}
			return false
		}
	}
	return true
}

// recordTail reads a node's record file (records.jsonl, written by the
// recording proxy) incrementally, from where it was when the tail began.
type recordTail struct {
	path    string
	offset  int64
	partial []byte
}

func newRecordTail(c *cluster.Cluster, node string) (*recordTail, error) {
	t := &recordTail{path: filepath.Join(c.NodeRoot(node), "var", "run", "weft", "records.jsonl")}
	fi, err := os.Stat(t.path)
	switch {
	case err == nil:
		t.offset = fi.Size()
	case !os.IsNotExist(err):
		return nil, fmt.Errorf("stat record file: %w", err)
	}
	return t, nil
}

// next returns the complete records appended since the last call.
func (t *recordTail) next() ([]recordproxy.Record, error) {
	f, err := os.Open(t.path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open record file: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(t.offset, io.SeekStart); err != nil {
		return nil, fmt.Errorf("seek record file: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read record file: %w", err)
	}
	t.offset += int64(len(data))
	data = append(t.partial, data...)
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		t.partial = data
		return nil, nil
	}
	t.partial = append([]byte(nil), data[end+1:]...)
	var out []recordproxy.Record
	sc := bufio.NewScanner(bytes.NewReader(data[:end+1]))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r recordproxy.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err == nil {
			out = append(out, r)
		}
	}
	return out, sc.Err()
}

// scrapeAgent returns a node's agent metrics (text exposition), fetched from
// the node's network namespace as Prometheus would.
func scrapeAgent(ctx context.Context, c *cluster.Cluster, node string) (string, error) {
	out, err := c.ExecNode(ctx, node, "curl", "-sSf", "--max-time", "5", "http://127.0.0.1:15021/metrics")
	if err != nil {
		return "", fmt.Errorf("scrape agent metrics on %s: %w", node, err)
	}
	return string(out), nil
}
