package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
	"github.com/weftmesh/weft/daemon/cniserver"
	"github.com/weftmesh/weft/tests/cluster"
)

// TestCNIPlugin runs the real weft-cni plugin in every pod's CNI chain of a
// real cluster, with an agent socket served by this test: pods of an
// enrolled namespace are announced to the agent before their containers
// start, other pods are not, a pod of an enrolled namespace does not start
// while the agent is down (and starts once it is back), and deleted pods are
// released.
func TestCNIPlugin(t *testing.T) {
	cluster.RequireRoot(t)
	tmp := t.TempDir()
	plugin := filepath.Join(tmp, "weft-cni")
	if out, err := exec.Command("go", "build", "-o", plugin, "github.com/weftmesh/weft/cmd/weft-cni").CombinedOutput(); err != nil {
		t.Fatalf("build weft-cni: %v\n%s", err, out)
	}
	// Written once the cluster (and its API server) runs; CNI ADD reads it
	// only for pods of namespaces that are not excluded.
	kubeconfig := filepath.Join(tmp, "weft-cni.kubeconfig")
	pluginConf := fmt.Sprintf(`{"type":"weft-cni","agentSocket":"$NODE_ROOT/var/run/weft/cni.sock","kubeconfig":%q,"logFile":"$NODE_ROOT/weft-cni.log"}`, kubeconfig)
	c := cluster.StartForTest(t, cluster.Config{
		Nodes:            1,
		ExtraCNIBinaries: map[string]string{"weft-cni": plugin},
		ExtraCNIPlugins:  []json.RawMessage{json.RawMessage(pluginConf)},
	})
	ctx := testCtx(t)
	const node = "node0"
	socket := filepath.Join(c.NodeRoot(node), "var/run/weft/cni.sock")
	t.Cleanup(func() {
		if t.Failed() {
			data, err := os.ReadFile(filepath.Join(c.NodeRoot(node), "weft-cni.log"))
			t.Logf("weft-cni log (%v):\n%s", err, data)
		}
	})
	writePluginKubeconfig(t, c, kubeconfig)

	const shop, plain = "shop", "plain"
	createNamespace(t, c, shop)
	createNamespace(t, c, plain)
	if _, err := c.Client.CoreV1().Namespaces().Patch(ctx, shop, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"weft.io/mesh":"enabled"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", shop, err)
	}

	rec := &podRecorder{c: c}
	top := t
	agent := startAgent(top, socket, rec)

	createPod := func(ns string, pod *corev1.Pod) {
		t.Helper()
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s/%s: %v", ns, pod.Name, err)
		}
	}
	optOut := sleepPod("optout", node)
	optOut.Labels["weft.io/mesh"] = "disabled"
	createPod(shop, sleepPod("web-1", node))
	createPod(shop, optOut)
	createPod(plain, sleepPod("other", node))
	web1 := waitPodRunning(t, c, shop, "web-1")
	waitPodRunning(t, c, shop, "optout")
	waitPodRunning(t, c, plain, "other")

	t.Run("pod of an enrolled namespace is announced before it starts", func(t *testing.T) {
		rec.assertAddedBeforeStart(t, web1)
	})

	t.Run("other pods are not announced", func(t *testing.T) {
		for _, a := range rec.adds() {
			if a.req.PodNamespace != shop || a.req.PodName != "web-1" {
				t.Errorf("agent got an AddRequest for %s/%s, want none", a.req.PodNamespace, a.req.PodName)
			}
		}
	})

	t.Run("plugin reads the API server as weft-cni, with get only", func(t *testing.T) {
		want := []string{"get namespaces shop/shop", "get pods shop/web-1", "get namespaces plain/plain", "get pods shop/optout"}
		var got []string
		err := cluster.Poll(ctx, 30*time.Second, 200*time.Millisecond, "weft-cni's requests in the audit log", func(context.Context) (bool, string, error) {
			got = auditedRequests(t, c, "system:serviceaccount:weft-system:weft-cni")
			for _, w := range want {
				if !slices.Contains(got, w) {
					return false, fmt.Sprintf("requests %q", got), nil
				}
			}
			return true, "", nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("weft-cni's requests: %q", got)
		for _, r := range got {
			if !strings.HasPrefix(r, "get ") || r == "get pods plain/other" {
				t.Errorf("weft-cni made request %q; want only gets of namespaces and of pods of enrolled namespaces", r)
			}
		}
	})

	t.Run("agent down: pod does not start until it is back", func(t *testing.T) {
		agent.stop(t)
		createPod(shop, sleepPod("web-2", node))
		want := fmt.Sprintf("weft-cni: pod %s/web-2 is in an enrolled namespace but the weft agent at %s is unreachable", shop, socket)
		var event string
		err := cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "FailedCreatePodSandBox event naming weft-cni", func(ctx context.Context) (bool, string, error) {
			evs, err := c.Client.CoreV1().Events(shop).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web-2"})
			if err != nil {
				return false, err.Error(), nil
			}
			var seen []string
			for _, e := range evs.Items {
				if e.Reason == "FailedCreatePodSandBox" && strings.Contains(e.Message, want) {
					event = e.Message
					return true, "", nil
				}
				seen = append(seen, e.Reason+": "+e.Message)
			}
			return false, fmt.Sprintf("events %q", seen), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("event: %s", event)
		p, err := c.Client.CoreV1().Pods(shop).Get(ctx, "web-2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase != corev1.PodPending || p.Status.PodIP != "" || slices.ContainsFunc(p.Status.ContainerStatuses, func(s corev1.ContainerStatus) bool { return s.State.Running != nil }) {
			t.Errorf("pod web-2 with the agent down: phase %s, IP %q, statuses %+v; want Pending without IP or running container", p.Status.Phase, p.Status.PodIP, p.Status.ContainerStatuses)
		}
		if _, err := c.ContainerPID(ctx, shop, "web-2", ""); err == nil {
			t.Errorf("pod web-2 has a running container while the agent is down")
		}

		agent = startAgent(top, socket, rec)
		web2 := waitPodRunning(t, c, shop, "web-2")
		rec.assertAddedBeforeStart(t, web2)
	})

	t.Run("deleting a pod releases it", func(t *testing.T) {
		if err := c.Client.CoreV1().Pods(shop).Delete(ctx, "web-1", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](1)}); err != nil {
			t.Fatal(err)
		}
		err := cluster.Poll(ctx, 60*time.Second, 200*time.Millisecond, "DelRequest for web-1", func(context.Context) (bool, string, error) {
			for _, d := range rec.dels() {
				if d.PodUID == string(web1.UID) && d.PodNamespace == shop && d.PodName == "web-1" && d.ContainerID != "" {
					return true, "", nil
				}
			}
			return false, fmt.Sprintf("dels %+v", rec.dels()), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// writePluginKubeconfig gives the plugin its own identity: ServiceAccount
// weft-system/weft-cni, allowed only to get namespaces and pods, with a
// TokenRequest token.
func writePluginKubeconfig(t *testing.T, c *cluster.Cluster, path string) {
	t.Helper()
	ctx := testCtx(t)
	createNamespace(t, c, "weft-system")
	if _, err := c.Client.CoreV1().ServiceAccounts("weft-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "weft-cni"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ServiceAccount weft-cni: %v", err)
	}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-cni"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces", "pods"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ClusterRole weft-cni: %v", err)
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-cni"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "weft-cni"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "weft-system", Name: "weft-cni"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ClusterRoleBinding weft-cni: %v", err)
	}
	tr, err := c.Client.CoreV1().ServiceAccounts("weft-system").CreateToken(ctx, "weft-cni", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request token for weft-cni: %v", err)
	}
	ca := c.RestConfig.CAData
	if len(ca) == 0 {
		if ca, err = os.ReadFile(c.RestConfig.CAFile); err != nil {
			t.Fatalf("read cluster CA: %v", err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["weft"] = &clientcmdapi.Cluster{Server: c.RestConfig.Host, CertificateAuthorityData: ca}
	kc.AuthInfos["weft-cni"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["weft-cni"] = &clientcmdapi.Context{Cluster: "weft", AuthInfo: "weft-cni"}
	kc.CurrentContext = "weft-cni"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatalf("write plugin kubeconfig: %v", err)
	}
}

// auditedRequests lists "verb resource namespace/name" of every request user
// made, from the API server's audit log.
func auditedRequests(t *testing.T, c *cluster.Cluster, user string) []string {
	t.Helper()
	data, err := os.ReadFile(c.AuditLog())
	if err != nil {
		t.Fatalf("read audit log: %v", err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		var ev struct {
			Stage string `json:"stage"`
			Verb  string `json:"verb"`
			User  struct {
				Username string `json:"username"`
			} `json:"user"`
			ObjectRef struct {
				Resource, Namespace, Name string
			} `json:"objectRef"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil || ev.User.Username != user || ev.Stage != "ResponseComplete" {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s %s/%s", ev.Verb, ev.ObjectRef.Resource, ev.ObjectRef.Namespace, ev.ObjectRef.Name))
	}
	return out
}

// testAgent is a cniserver run by the test.
type testAgent struct {
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, socket string, e cniserver.Enroller) *testAgent {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	s := cniserver.New(socket, e, log)
	ctx, cancel := context.WithCancel(context.Background())
	a := &testAgent{cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- s.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	select {
	case <-s.Ready():
	case err := <-a.done:
		t.Fatalf("start cniserver on %s: %v", socket, err)
	}
	return a
}

// stop stops the agent and waits until its socket is gone; it is
// idempotent.
func (a *testAgent) stop(t *testing.T) {
	t.Helper()
	a.cancel()
	if err, ok := <-a.done; ok {
		close(a.done)
		if err != nil {
			t.Errorf("cniserver Run = %v", err)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// recordedAdd is an AddRequest with what was true when it arrived.
type recordedAdd struct {
	req              cniv1.AddRequest
	at               time.Time
	netnsExists      bool
	containerRunning bool
}

// podRecorder is an Enroller that records requests and, on each add, looks
// at whether the pod's container already runs.
type podRecorder struct {
	c *cluster.Cluster

	mu      sync.Mutex // guards the fields below
	added   []recordedAdd
	deleted []cniv1.DelRequest
}

func (r *podRecorder) CNIAdd(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	a := recordedAdd{req: req, at: time.Now()}
	_, err := os.Stat(req.Netns)
	a.netnsExists = err == nil
	_, err = r.c.ContainerPID(ctx, req.PodNamespace, req.PodName, "")
	a.containerRunning = err == nil
	r.mu.Lock()
	defer r.mu.Unlock()
	r.added = append(r.added, a)
	return cniv1.Response{Enrolled: true}, nil
}

func (r *podRecorder) CNIDel(_ context.Context, req cniv1.DelRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deleted = append(r.deleted, req)
	return nil
}

func (r *podRecorder) CNICheck(_ context.Context, req cniv1.AddRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.added {
		if a.req.ContainerID == req.ContainerID {
			return nil
		}
	}
	return fmt.Errorf("container %s: %w", req.ContainerID, cniserver.ErrNotEnrolled)
}

func (r *podRecorder) adds() []recordedAdd {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.added)
}

func (r *podRecorder) dels() []cniv1.DelRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deleted)
}

// assertAddedBeforeStart: exactly one AddRequest named the running pod, with
// its UID, an existing netns and its IP, and came before its container ran.
func (r *podRecorder) assertAddedBeforeStart(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	var mine []recordedAdd
	for _, a := range r.adds() {
		if a.req.PodUID == string(pod.UID) {
			mine = append(mine, a)
		}
	}
	if len(mine) != 1 {
		t.Fatalf("agent got %d AddRequests for %s/%s (uid %s), want 1: %+v", len(mine), pod.Namespace, pod.Name, pod.UID, mine)
	}
	a := mine[0]
	if a.req.PodNamespace != pod.Namespace || a.req.PodName != pod.Name || a.req.IfName != "eth0" || a.req.ContainerID == "" {
		t.Errorf("AddRequest = %+v, want pod %s/%s on eth0", a.req, pod.Namespace, pod.Name)
	}
	if !strings.HasPrefix(a.req.Netns, "/run/netns/") || !a.netnsExists {
		t.Errorf("AddRequest netns %q (exists: %v), want an existing /run/netns path", a.req.Netns, a.netnsExists)
	}
	if ips := fmt.Sprint(a.req.IPs); ips != "["+pod.Status.PodIP+"]" {
		t.Errorf("AddRequest IPs = %s, want [%s]", ips, pod.Status.PodIP)
	}
	if a.containerRunning {
		t.Errorf("container of %s already ran when the agent was asked to enroll it", pod.Name)
	}
	started := pod.Status.ContainerStatuses[0].State.Running.StartedAt.Time
	// startedAt has second precision.
	if started.Before(a.at.Truncate(time.Second)) {
		t.Errorf("container started at %v, before the AddRequest at %v", started, a.at)
	}
	t.Logf("AddRequest for %s at %s, container started at %s (second precision)", pod.Name, a.at.Format(time.StampMicro), started.Format(time.Stamp))
}
