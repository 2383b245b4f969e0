package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/tests/capture"
	"github.com/weftmesh/weft/tests/cluster"
	"github.com/weftmesh/weft/ztunnel/state"
)

// meshApp is the workload set of the ztunnel tests: a server D (tcp-echo on
// 9000, HTTP echo on 8080) on node1 behind Service "server", and clients A
// and B (ServiceAccounts a and b) on node0.
type meshApp struct {
	c        *cluster.Cluster
	ns       string
	serverIP string
	vip      string
	ca       *cluster.MeshCA
	policy   cluster.MeshOptions
}

func serviceAccount(t *testing.T, c *cluster.Cluster, ns, name string) {
	t.Helper()
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(testCtx(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create serviceaccount %s/%s: %v", ns, name, err)
	}
}

// deployment creates a one-replica Deployment of the test app on node.
func deployment(t *testing.T, c *cluster.Cluster, ns, name, sa, node string, ctrs ...corev1.Container) {
	t.Helper()
	labels := map[string]string{"app": name}
	_, err := c.Client.AppsV1().Deployments(ns).Create(testCtx(t), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName:            sa,
					NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers:                    ctrs,
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create deployment %s/%s: %v", ns, name, err)
	}
}

func sleepContainer() corev1.Container {
	return corev1.Container{Name: "main", Image: cluster.TestAppImage + ":dev", Command: []string{testapp}, Args: []string{"sleep"}}
}

func tcpEchoContainer() corev1.Container {
	return corev1.Container{
		Name: "tcp", Image: cluster.TestAppImage + ":dev", Command: []string{testapp}, Args: []string{"tcp-echo", "--port", "9000"},
		Ports: []corev1.ContainerPort{{Name: "tcp", ContainerPort: 9000}},
	}
}

// podOf returns the running pod of Deployment name.
func podOf(t *testing.T, c *cluster.Cluster, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := cluster.Poll(testCtx(t), 60*time.Second, 100*time.Millisecond, "pod of "+ns+"/"+name+" ready", func(ctx context.Context) (bool, string, error) {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err.Error(), nil
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp == nil && podReady(p) {
				pod = p
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d pods, none ready", len(pods.Items)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// certLifetime is the workload certificate lifetime of the ztunnel tests
// (renewed at half-life).
const certLifetime = 20 * time.Second

func setupMeshApp(t *testing.T) *meshApp {
	t.Helper()
	c := cluster.StartForTest(t, cluster.Config{Nodes: 2})
	ctx := testCtx(t)
	// Short-lived certificates: every certificate is renewed several times
	// while the test runs, so all of it also runs across rotations.
	ca, err := c.InstallMesh(ctx, "ztunnel.certLifetime="+certLifetime.String())
	if err != nil {
		t.Fatal(err)
	}
	m := &meshApp{c: c, ns: "mesh", ca: ca}
	createNamespace(t, c, m.ns)
	for _, sa := range []string{"a", "b", "server"} {
		serviceAccount(t, c, m.ns, sa)
	}
	deployment(t, c, m.ns, "server", "server", "node1", echoContainer(), tcpEchoContainer())
	deployment(t, c, m.ns, "client-a", "a", "node0", sleepContainer())
	deployment(t, c, m.ns, "client-b", "b", "node0", sleepContainer())
	deployment(t, c, m.ns, "client-near", "a", "node1", sleepContainer())
	_, err = c.Client.CoreV1().Services(m.ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "tcp", Port: 9000, TargetPort: intstr.FromInt32(9000)},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	server := podOf(t, c, m.ns, "server")
	m.serverIP = server.Status.PodIP
	svc, err := c.Client.CoreV1().Services(m.ns).Get(ctx, "server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.vip = svc.Spec.ClusterIP
	for _, d := range []string{"client-a", "client-b", "client-near"} {
		podOf(t, c, m.ns, d)
	}
	if err := cluster.Poll(ctx, 30*time.Second, 200*time.Millisecond, "server endpoints", func(ctx context.Context) (bool, string, error) {
		return len(readyEndpoints(ctx, t, c, m.ns, "server")) == 1, "", nil
	}); err != nil {
		t.Fatal(err)
	}
	// kube-proxy programs a new VIP asynchronously.
	if err := cluster.Poll(ctx, 30*time.Second, 200*time.Millisecond, "server VIP reachable", func(ctx context.Context) (bool, string, error) {
		_, err := m.tcp(t, ctx, "client-a", m.vip+":9000")
		return err == nil, fmt.Sprint(err), nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// sync writes the mesh config for the cluster's current state and policy
// and waits until every node's ztunnel serves it.
func (m *meshApp) sync(t *testing.T) *state.Snapshot {
	t.Helper()
	snap, err := m.c.SyncMeshConfig(testCtx(t), m.policy)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// enroll labels the namespace, writes the config and waits until a client's
// connections reach the server through the node proxies (the server's
// ztunnel counts an inbound mTLS connection from client-a).
func (m *meshApp) enroll(t *testing.T) {
	t.Helper()
	labelNamespace(t, m.c, m.ns, `"enabled"`)
	m.sync(t)
	ctx := testCtx(t)
	err := cluster.Poll(ctx, 30*time.Second, 300*time.Millisecond, "client-a meshed", func(ctx context.Context) (bool, string, error) {
		before := m.opened(t, "node1", "client-a", "server")
		if _, err := m.tcp(t, ctx, "client-a", m.vip+":9000"); err != nil {
			return false, err.Error(), nil
		}
		after := m.opened(t, "node1", "client-a", "server")
		return after > before, fmt.Sprintf("opened %v → %v", before, after), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tcp makes one echo connection from a client Deployment's pod.
func (m *meshApp) tcp(t *testing.T, ctx context.Context, client, addr string) (string, error) {
	pod := podOf(t, m.c, m.ns, client)
	out, err := m.c.Exec(ctx, m.ns, pod.Name, "", appBinary(m.c), "tcp", addr, "--timeout", "3s")
	if err != nil {
		return string(out), fmt.Errorf("tcp %s from %s: %v: %s", addr, client, err, out)
	}
	return string(out), nil
}

// metrics scrapes a node's ztunnel.
func (m *meshApp) metrics(t *testing.T, node string) string {
	t.Helper()
	out, err := m.c.ExecNode(testCtx(t), node, "curl", "-sS", "--max-time", "3", "http://127.0.0.1:15020/metrics")
	if err != nil {
		t.Fatalf("scrape ztunnel on %s: %v\n%s", node, err, out)
	}
	return string(out)
}

// opened sums istio_tcp_connections_opened_total reported by node's
// ztunnel as destination for a source and destination workload.
func (m *meshApp) opened(t *testing.T, node, src, dst string) float64 {
	t.Helper()
	return sumMetric(m.metrics(t, node), "istio_tcp_connections_opened_total", map[string]string{
		"reporter": "destination", "source_workload": src, "destination_workload": dst,
	})
}

// sumMetric adds the samples of a metric family in Prometheus text whose
// labels include every pair of want.
func sumMetric(text, name string, want map[string]string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		end := strings.LastIndex(line, "}")
		if end < 0 {
			continue
		}
		labels := line[len(name)+1 : end]
		ok := true
		for k, v := range want {
			if !strings.Contains(labels, k+`="`+v+`"`) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		var v float64
		fmt.Sscan(strings.TrimSpace(line[end+1:]), &v)
		sum += v
	}
	return sum
}

// ztunnelLog returns the log of node's ztunnel.
func (m *meshApp) ztunnelLog(t *testing.T, node string) string {
	t.Helper()
	pods, err := m.c.Client.CoreV1().Pods(installNS).List(testCtx(t), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-ztunnel"})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, p := range pods.Items {
		if p.Spec.NodeName != node {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(m.c.NodeRoot(node), "var/log/pods", p.Namespace+"_"+p.Name+"_"+string(p.UID), "*", "*.log"))
		for _, f := range files {
			data, _ := os.ReadFile(f)
			b.Write(data)
		}
	}
	return b.String()
}

func randomMarker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "WEFT-MARKER-" + hex.EncodeToString(b)
}

type streamResult struct {
	Connections   int      `json:"connections"`
	OK            int      `json:"ok"`
	BytesSent     int64    `json:"bytesSent"`
	BytesReceived int64    `json:"bytesReceived"`
	Errors        []string `json:"errors"`
	Millis        int64    `json:"millis"`
}

func (m *meshApp) stream(t *testing.T, client, addr string, conns int, bytes int64, marker string) streamResult {
	t.Helper()
	pod := podOf(t, m.c, m.ns, client)
	args := []string{appBinary(m.c), "stream", addr, "--connections", fmt.Sprint(conns), "--bytes", fmt.Sprint(bytes), "--timeout", "3m"}
	if marker != "" {
		args = append(args, "--marker", marker)
	}
	out, err := m.c.Exec(testCtx(t), m.ns, pod.Name, "", args...)
	var r streamResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("stream from %s: %v (%v)\n%s", client, err, jerr, out)
	}
	return r
}

// TestZtunnel: the node proxy installed by the chart carries meshed pods'
// traffic as HBONE mTLS, load-balances Services itself, enforces L4 policy
// and reports Istio's metrics.
func TestZtunnel(t *testing.T) {
	m := setupMeshApp(t)
	ctx := testCtx(t)
	serverIP := netip.MustParseAddr(m.serverIP)
	clientA := podOf(t, m.c, m.ns, "client-a")
	clientIP := netip.MustParseAddr(clientA.Status.PodIP)

	t.Run("plaintext on the wire before enrollment", func(t *testing.T) {
		marker := randomMarker(t)
		cap, err := capture.Underlay(ctx, t, m.c, "tcp and net 10.244.0.0/16")
		if err != nil {
			t.Fatal(err)
		}
		if r := m.stream(t, "client-a", m.vip+":9000", 1, 64<<10, marker); r.OK != 1 {
			t.Fatalf("un-meshed stream: %+v", r)
		}
		res, err := cap.Stop()
		if err != nil {
			t.Fatal(err)
		}
		if !res.Contains([]byte(marker)) {
			t.Fatalf("un-meshed capture does not contain the marker: the capture sees nothing, so the meshed check below would prove nothing")
		}
	})

	m.enroll(t)

	t.Run("VIP and DNS name through HBONE", func(t *testing.T) {
		for _, url := range []string{"http://" + m.vip + "/", "http://server." + m.ns + "/", "http://server." + m.ns + ".svc.cluster.local/"} {
			if s := httpGet(t, m.c, m.ns, clientA.Name, url, 3); s.OK != 3 {
				t.Errorf("GET %s from client-a: %+v", url, s)
			}
		}
	})

	t.Run("no plaintext on the wire when meshed", func(t *testing.T) {
		marker := randomMarker(t)
		cap, err := capture.Underlay(ctx, t, m.c, "tcp and net 10.244.0.0/16")
		if err != nil {
			t.Fatal(err)
		}
		if r := m.stream(t, "client-a", m.vip+":9000", 2, 1<<20, marker); r.OK != 2 {
			t.Fatalf("meshed stream: %+v", r)
		}
		res, err := cap.Stop()
		if err != nil {
			t.Fatal(err)
		}
		if res.Contains([]byte(marker)) {
			t.Errorf("the marker crossed the underlay in plaintext")
		}
		if n := res.TLSBytes(clientIP, serverIP, 15008); n < 1<<20 {
			t.Errorf("TLS bytes between %s and %s:15008 = %d, want ≥ 1 MiB", clientIP, serverIP, n)
		}
		if n := res.TCPBytes(clientIP, serverIP, 9000); n != 0 {
			t.Errorf("%d bytes went to the app port 9000 directly", n)
		}
	})

	t.Run("1000 concurrent connections through one ztunnel", func(t *testing.T) {
		r := m.stream(t, "client-near", m.serverIP+":9000", 1000, 1<<20, "")
		if r.OK != 1000 || r.BytesReceived != 1000<<20 {
			t.Fatalf("1000 × 1 MiB: ok %d, received %d bytes, errors %v", r.OK, r.BytesReceived, r.Errors)
		}
		t.Logf("1000 connections × 1 MiB each way in %d ms", r.Millis)
	})

	t.Run("policy", func(t *testing.T) {
		// A long-lived connection of A, open before any policy.
		holdCtx, cancelHold := context.WithCancel(ctx)
		defer cancelHold()
		holdDone := make(chan holdResult, 1)
		go func() { holdDone <- m.hold(holdCtx, clientA.Name, m.vip+":9000") }()

		allowA := state.Policy{
			Name:        m.ns + "/allow-a",
			Destination: state.Destination{Namespace: m.ns, ServiceAccount: "server"},
			Sources:     []string{"spiffe://cluster.local/ns/" + m.ns + "/sa/a"},
			Rules:       []state.Rule{{Kind: "TCPRoute", Name: "all"}},
		}
		m.policy.Policies = []state.Policy{allowA}
		m.sync(t)
		if err := cluster.Poll(ctx, 10*time.Second, 200*time.Millisecond, "B refused", func(ctx context.Context) (bool, string, error) {
			_, err := m.tcp(t, ctx, "client-b", m.vip+":9000")
			return err != nil, "", nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.tcp(t, ctx, "client-a", m.vip+":9000"); err != nil {
			t.Errorf("A refused under a policy that allows it: %v", err)
		}
		log := m.ztunnelLog(t, "node1")
		if !strings.Contains(log, "connection denied") || !strings.Contains(log, "allow-a") || !strings.Contains(log, "/sa/b") {
			t.Errorf("no denial of sa/b naming the policy in node1's ztunnel log")
		}
		denied := sumMetric(m.metrics(t, "node1"), "weft_ztunnel_connections_denied_total", map[string]string{"destination_workload": "server"})
		if denied < 1 {
			t.Errorf("weft_ztunnel_connections_denied_total for server = %v, want ≥ 1", denied)
		}

		m.policy.Policies = nil
		m.sync(t)
		start := time.Now()
		if err := cluster.Poll(ctx, 10*time.Second, 200*time.Millisecond, "B restored", func(ctx context.Context) (bool, string, error) {
			_, err := m.tcp(t, ctx, "client-b", m.vip+":9000")
			return err == nil, fmt.Sprint(err), nil
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("B restored %v after the policy was removed", time.Since(start).Round(time.Millisecond))

		select {
		case r := <-holdDone:
			t.Fatalf("A's long-lived connection ended before the policy was tightened: %+v", r)
		default:
		}
		// Tighten: only sa/c may connect; A's open connection must close.
		onlyC := allowA
		onlyC.Name = m.ns + "/only-c"
		onlyC.Sources = []string{"spiffe://cluster.local/ns/" + m.ns + "/sa/c"}
		m.policy.Policies = []state.Policy{onlyC}
		m.sync(t)
		select {
		case r := <-holdDone:
			if r.Error == "" {
				t.Errorf("A's connection ended without an error: %+v", r)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("A's open connection survived a policy that denies it")
		}
		m.policy.Policies = nil
		m.sync(t)
	})

	t.Run("openssl s_client to :15008", func(t *testing.T) {
		m.opensslChecks(t)
	})

	t.Run("Prometheus scrapes Istio metrics", func(t *testing.T) {
		m.prometheusCheck(t)
	})

	t.Run("client refuses a server with another identity", func(t *testing.T) {
		snap, err := m.c.MeshSnapshot(ctx, m.policy)
		if err != nil {
			t.Fatal(err)
		}
		for i := range snap.Workloads {
			if snap.Workloads[i].IPs[0].String() == m.serverIP {
				snap.Workloads[i].ServiceAccount = "impostor-check"
			}
		}
		if err := m.c.WriteMeshConfig(snap); err != nil {
			t.Fatal(err)
		}
		if err := m.c.WaitMeshConfig(ctx, snap.Version); err != nil {
			t.Fatal(err)
		}
		if err := cluster.Poll(ctx, 10*time.Second, 200*time.Millisecond, "client refuses the server", func(ctx context.Context) (bool, string, error) {
			_, err := m.tcp(t, ctx, "client-a", m.vip+":9000")
			return err != nil, "", nil
		}); err != nil {
			t.Fatal(err)
		}
		if log := m.ztunnelLog(t, "node0"); !strings.Contains(log, "impostor-check") {
			t.Errorf("node0's ztunnel log does not say which identity it expected")
		}
		m.sync(t)
		if err := cluster.Poll(ctx, 10*time.Second, 200*time.Millisecond, "restored", func(ctx context.Context) (bool, string, error) {
			_, err := m.tcp(t, ctx, "client-a", m.vip+":9000")
			return err == nil, fmt.Sprint(err), nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	m.testRotationAndDrain(t)
}

// testRotationAndDrain: a connection kept open across certificate renewals
// survives them; unenrolling the namespace lets open connections finish.
func (m *meshApp) testRotationAndDrain(t *testing.T) {
	ctx := testCtx(t)
	clientA := podOf(t, m.c, m.ns, "client-a")
	issued := func() int {
		n := 0
		for _, line := range strings.Split(m.ztunnelLog(t, "node1"), "\n") {
			if strings.Contains(line, `"msg":"certificate issued"`) && strings.Contains(line, `"id":"spiffe://cluster.local/ns/`+m.ns+`/sa/server"`) {
				n++
			}
		}
		return n
	}
	t.Run("certificate rotation keeps connections", func(t *testing.T) {
		before := issued()
		r := m.holdFor(ctx, clientA.Name, m.vip+":9000", certLifetime+5*time.Second)
		if r.Error != "" {
			t.Fatalf("connection held across certificate renewals ended: %+v", r)
		}
		if after := issued(); after < before+2 {
			t.Errorf("server certificate issued %d times during a %v connection, want ≥ 2 renewals (lifetime %v)", after-before, certLifetime+5*time.Second, certLifetime)
		}
	})
	t.Run("unenrolling lets open connections finish", func(t *testing.T) {
		done := make(chan holdResult, 1)
		go func() { done <- m.holdFor(ctx, clientA.Name, m.vip+":9000", 8*time.Second) }()
		// The hold is meshed once the server's ztunnel counts it.
		if err := cluster.Poll(ctx, 5*time.Second, 100*time.Millisecond, "held connection open", func(ctx context.Context) (bool, string, error) {
			return sumMetric(m.metrics(t, "node1"), "weft_ztunnel_active_connections", map[string]string{"direction": "inbound"}) >= 1, "", nil
		}); err != nil {
			t.Fatal(err)
		}
		labelNamespace(t, m.c, m.ns, "null")
		m.sync(t)
		// New connections go direct once the pods are unenrolled.
		if err := cluster.Poll(ctx, 10*time.Second, 200*time.Millisecond, "client-a unenrolled", func(ctx context.Context) (bool, string, error) {
			before := m.opened(t, "node1", "client-a", "server")
			if _, err := m.tcp(t, ctx, "client-a", m.vip+":9000"); err != nil {
				return false, err.Error(), nil
			}
			return m.opened(t, "node1", "client-a", "server") == before, "still meshed", nil
		}); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.Error != "" {
			t.Errorf("connection open before unenrolling was cut: %+v", r)
		}
	})
}

type holdResult struct {
	Pings      int    `json:"pings"`
	HeldMillis int64  `json:"heldMillis"`
	Error      string `json:"error"`
}

func (m *meshApp) hold(ctx context.Context, pod, addr string) holdResult {
	return m.holdFor(ctx, pod, addr, 4*time.Minute)
}

// holdFor holds one echo connection from pod to addr for d and reports how
// it ended.
func (m *meshApp) holdFor(ctx context.Context, pod, addr string, d time.Duration) holdResult {
	out, err := m.c.Exec(ctx, m.ns, pod, "", appBinary(m.c), "hold", addr, "--interval", "100ms", "--duration", d.String())
	var r holdResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		r.Error = fmt.Sprintf("hold: %v (%v): %s", err, jerr, out)
	}
	return r
}
