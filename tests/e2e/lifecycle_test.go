package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/tests/cluster"
)

// TestPodLifecycle checks the node emulator behaves like a kubelet where a
// user would notice: probes gate readiness and EndpointSlices, crashed
// containers restart and are counted, deleted pods vanish with their netns
// and processes, projected tokens authenticate as the pod, and host-network
// pods share the node's namespace.
func TestPodLifecycle(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Config{Nodes: 2})
	const ns = "life"
	createNamespace(t, c, ns)

	t.Run("failing readiness probe keeps the pod out of the Service", func(t *testing.T) {
		ctx := testCtx(t)
		labels := map[string]string{"app": "flaky"}
		for name, path := range map[string]string{"good": "/healthz", "bad": "/status/503"} {
			ctr := echoContainer()
			ctr.ReadinessProbe.HTTPGet.Path = path
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{ctr}, TerminationGracePeriodSeconds: ptr.To[int64](5)},
			}
			if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "flaky"},
			Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var eps map[string]bool
		err := cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "good ready in EndpointSlice", func(ctx context.Context) (bool, string, error) {
			eps = allEndpoints(ctx, t, c, ns, "flaky")
			return eps["good"], fmt.Sprintf("%v", eps), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Give the bad pod several probe periods to (wrongly) turn ready.
		deadline := time.Now().Add(4 * time.Second)
		for time.Now().Before(deadline) {
			bad, err := c.Client.CoreV1().Pods(ns).Get(ctx, "bad", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if podReady(bad) {
				t.Fatalf("pod with a failing readiness probe is Ready: %+v", bad.Status.Conditions)
			}
			if eps := allEndpoints(ctx, t, c, ns, "flaky"); eps["bad"] {
				t.Fatalf("pod with a failing readiness probe is a ready endpoint: %v", eps)
			}
			time.Sleep(500 * time.Millisecond)
		}
		bad, _ := c.Client.CoreV1().Pods(ns).Get(ctx, "bad", metav1.GetOptions{})
		if bad.Status.Phase != corev1.PodRunning {
			t.Errorf("bad pod phase %s, want Running (alive but not ready)", bad.Status.Phase)
		}
	})

	t.Run("exited container is restarted and counted", func(t *testing.T) {
		ctx := testCtx(t)
		pod := sleepPod("crasher", "node1")
		pod.Spec.Containers[0].Args = []string{"sleep", "--exit-after", "500ms", "--exit-code", "3"}
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		err := cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "restartCount >= 2", func(ctx context.Context) (bool, string, error) {
			p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "crasher", metav1.GetOptions{})
			if err != nil || len(p.Status.ContainerStatuses) == 0 {
				return false, fmt.Sprint(err), nil
			}
			cs := p.Status.ContainerStatuses[0]
			last := cs.LastTerminationState.Terminated
			return cs.RestartCount >= 2 && last != nil && last.ExitCode == 3, fmt.Sprintf("%+v", cs), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		kubectl, err := c.Kubectl()
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", c.Kubeconfig(), "get", "pod", "-n", ns, "crasher",
			"--no-headers", "-o", "custom-columns=NAME:.metadata.name,RESTARTS:.status.containerStatuses[0].restartCount").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl get pod: %v\n%s", err, out)
		}
		var name string
		var restarts int
		if _, err := fmt.Sscan(string(out), &name, &restarts); err != nil || restarts < 2 {
			t.Errorf("kubectl get pod shows %q, want crasher with >= 2 restarts", out)
		}
		// The default columns show it too.
		out, _ = exec.CommandContext(ctx, kubectl, "--kubeconfig", c.Kubeconfig(), "get", "pod", "-n", ns, "crasher").CombinedOutput()
		t.Logf("kubectl get pod:\n%s", out)
	})

	t.Run("deleted pod loses its netns and processes within 10s", func(t *testing.T) {
		ctx := testCtx(t)
		pod := sleepPod("doomed", "node0")
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := waitPodRunning(t, c, ns, "doomed")
		pid, err := c.ContainerPID(ctx, ns, "doomed", "main")
		if err != nil {
			t.Fatal(err)
		}
		netns := podNetnsName(c, p)
		if _, err := os.Stat("/run/netns/" + netns); err != nil {
			t.Fatalf("pod netns before delete: %v", err)
		}
		began := time.Now()
		if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err = cluster.Poll(ctx, 10*time.Second, 100*time.Millisecond, "pod, netns and process gone", func(ctx context.Context) (bool, string, error) {
			_, getErr := c.Client.CoreV1().Pods(ns).Get(ctx, "doomed", metav1.GetOptions{})
			_, nsErr := os.Stat("/run/netns/" + netns)
			procErr := syscall.Kill(pid, 0)
			gone := apierrors.IsNotFound(getErr) && os.IsNotExist(nsErr) && procErr == syscall.ESRCH
			return gone, fmt.Sprintf("pod: %v, netns: %v, process: %v", getErr, nsErr, procErr), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pod, netns and process gone %s after delete", time.Since(began).Round(time.Millisecond))
	})

	t.Run("projected token: in-cluster RBAC and a TokenReview naming pod and node", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "reader-reads-pods"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: ns}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pod := sleepPod("reader", "node1")
		pod.Spec.ServiceAccountName = "reader"
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodRunning(t, c, ns, "reader")

		out, err := c.Exec(ctx, ns, "reader", "", appBinary(c), "kube-check",
			"--can", "list:pods:"+ns, "--can", "list:secrets:"+ns, "--can", "list:pods:kube-system", "--can", "get:nodes::node0")
		if err != nil {
			t.Fatalf("kube-check in pod: %v\n%s", err, out)
		}
		var checks []struct {
			Verb, Resource, Namespace string
			Allowed                   bool
			Code                      int
		}
		if err := json.Unmarshal(out, &checks); err != nil {
			t.Fatalf("decode kube-check %q: %v", out, err)
		}
		want := map[string]bool{"list pods " + ns: true, "list secrets " + ns: false, "list pods kube-system": false, "get nodes ": false}
		if len(checks) != len(want) {
			t.Fatalf("kube-check returned %d results, want %d: %s", len(checks), len(want), out)
		}
		for _, ch := range checks {
			key := ch.Verb + " " + ch.Resource + " " + ch.Namespace
			if ch.Allowed != want[key] {
				t.Errorf("%s: allowed=%v (HTTP %d), want %v", key, ch.Allowed, ch.Code, want[key])
			}
			if !ch.Allowed && ch.Code != 403 {
				t.Errorf("%s: refused with HTTP %d, want 403", key, ch.Code)
			}
		}

		token, err := c.Exec(ctx, ns, "reader", "", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token")
		if err != nil {
			t.Fatalf("read projected token: %v", err)
		}
		tr, err := c.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: strings.TrimSpace(string(token))},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := tr.Status
		if !st.Authenticated || st.User.Username != "system:serviceaccount:"+ns+":reader" {
			t.Fatalf("TokenReview = authenticated %v user %q (%s), want system:serviceaccount:%s:reader", st.Authenticated, st.User.Username, st.Error, ns)
		}
		if got := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != "reader" {
			t.Errorf("token's pod-name extra = %v, want [reader]", got)
		}
		if got := st.User.Extra["authentication.kubernetes.io/node-name"]; len(got) != 1 || got[0] != "node1" {
			t.Errorf("token's node-name extra = %v, want [node1]", got)
		}
	})

	t.Run("host-network pod runs in the node netns and reaches a Service VIP", func(t *testing.T) {
		ctx := testCtx(t)
		echoDeployment(t, c, ns, "web", "node0", 1)
		pod := sleepPod("hostnet", "node1")
		pod.Spec.HostNetwork = true
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := waitPodRunning(t, c, ns, "hostnet")
		if p.Status.PodIP != c.NodeIP("node1") {
			t.Errorf("host-network pod IP %s, want node1's %s", p.Status.PodIP, c.NodeIP("node1"))
		}
		pid, err := c.ContainerPID(ctx, ns, "hostnet", "main")
		if err != nil {
			t.Fatal(err)
		}
		podNS, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			t.Fatal(err)
		}
		nodeNS, err := os.Stat("/run/netns/" + c.NodeNetns("node1"))
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(podNS, nodeNS) {
			t.Errorf("host-network pod is not in node1's network namespace")
		}
		err = cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "web ready", func(ctx context.Context) (bool, string, error) {
			eps := readyEndpoints(ctx, t, c, ns, "web")
			return len(eps) == 1, fmt.Sprint(eps), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitReachable(t, c, ns, "hostnet", "http://"+svc.Spec.ClusterIP+"/")
		got := httpGet(t, c, ns, "hostnet", "http://"+svc.Spec.ClusterIP+"/", 3)
		if got.OK != 3 {
			t.Errorf("host-network GET of the Service VIP: %d/3 ok, errors %v", got.OK, got.Errors)
		}
	})
}

// podNetnsName is the named netns the emulator made for a pod.
func podNetnsName(c *cluster.Cluster, p *corev1.Pod) string {
	return c.NodeNetns(p.Spec.NodeName) + "-" + string(p.UID)[:8]
}
