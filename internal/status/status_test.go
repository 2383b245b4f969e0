package status

import (
	"bytes"
	"flag"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// fakeNode serves a node's agent and ztunnel endpoints on ip.
type fakeNode struct {
	agentHealthy, ztunnelReady bool
	metrics                    string
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	return ln
}

func serve(t *testing.T, ln net.Listener, h http.HandlerFunc) {
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func code(ok bool) int {
	if ok {
		return http.StatusOK
	}
	return http.StatusServiceUnavailable
}

func readyPod(name, node, selector string, ready bool) *corev1.Pod {
	k, v, _ := strings.Cut(selector, "=")
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "weft-system", Labels: map[string]string{k: v}},
		Spec:       corev1.PodSpec{NodeName: node, HostNetwork: true},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "127.0.0.9", Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: st, Reason: map[bool]string{false: "ContainersNotReady"}[ready]}}},
	}
}

func appPod(ns, name, node string, labels map[string]string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: phase}}
}

const healthyMetrics = `# TYPE weft_ztunnel_config_info gauge
weft_ztunnel_config_info{version="v7"} 1
# TYPE weft_ztunnel_cert_expiry_timestamp_seconds gauge
weft_ztunnel_cert_expiry_timestamp_seconds{identity="spiffe://cluster.local/ns/shop/sa/web"} 1.7965e+09
weft_ztunnel_cert_expiry_timestamp_seconds{identity="spiffe://cluster.local/ns/shop/sa/api"} 1.7964e+09
`

func TestCheck(t *testing.T) {
	// node-1 on 127.0.0.1 and node-2 on 127.0.0.2, same ports.
	agentLn := listen(t, "127.0.0.1:0")
	agentPort := agentLn.Addr().(*net.TCPAddr).Port
	ztLn := listen(t, "127.0.0.1:0")
	ztPort := ztLn.Addr().(*net.TCPAddr).Port
	nodes := map[string]*fakeNode{
		"127.0.0.1": {agentHealthy: true, ztunnelReady: true, metrics: healthyMetrics},
		"127.0.0.2": {agentHealthy: true, ztunnelReady: true, metrics: healthyMetrics},
	}
	for ip, ln := range map[string][2]net.Listener{
		"127.0.0.1": {agentLn, ztLn},
		"127.0.0.2": {listen(t, "127.0.0.2:"+strconv.Itoa(agentPort)), listen(t, "127.0.0.2:"+strconv.Itoa(ztPort))},
	} {
		serve(t, ln[0], func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(code(nodes[ip].agentHealthy))
		})
		serve(t, ln[1], func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/healthz/ready":
				w.WriteHeader(code(nodes[ip].ztunnelReady))
				if !nodes[ip].ztunnelReady {
					w.Write([]byte("no certificate yet\n"))
				}
			case "/metrics":
				w.Write([]byte(nodes[ip].metrics))
			default:
				http.NotFound(w, r)
			}
		})
	}

	objects := func(ztunnel2Ready bool) []runtime.Object {
		return []runtime.Object{
			&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.2"}}}},
			&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}}},
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: OperatorName, Namespace: "weft-system"},
				Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1)}, Status: appsv1.DeploymentStatus{ReadyReplicas: 1, AvailableReplicas: 1}},
			readyPod("weft-agent-a", "node-1", AgentSelector, true), readyPod("weft-agent-b", "node-2", AgentSelector, true),
			readyPod("weft-ztunnel-a", "node-1", ZtunnelSelector, true), readyPod("weft-ztunnel-b", "node-2", ZtunnelSelector, ztunnel2Ready),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{MeshLabel: MeshEnabled}}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "blog"}},
			appPod("shop", "web-1", "node-1", nil, corev1.PodRunning),
			appPod("shop", "web-2", "node-1", nil, corev1.PodRunning),
			appPod("shop", "api-1", "node-2", nil, corev1.PodRunning),
			appPod("shop", "optout", "node-2", map[string]string{MeshLabel: MeshDisabled}, corev1.PodRunning),
			appPod("shop", "pending", "node-2", nil, corev1.PodPending),
			appPod("blog", "post-1", "node-1", nil, corev1.PodRunning),
		}
	}
	tests := []struct {
		name        string
		ztunnel2    bool // node-2's ztunnel pod ready
		setup       func()
		wantHealthy bool
		wantProblem []string
	}{
		{name: "healthy", ztunnel2: true, setup: func() {}, wantHealthy: true},
		{name: "ztunnel stopped", ztunnel2: false, setup: func() {
			nodes["127.0.0.2"].ztunnelReady = false
		}, wantProblem: []string{
			"node node-2: ztunnel pod: weft-ztunnel-b not ready (ContainersNotReady)",
			"node node-2: ztunnel readiness: GET http://127.0.0.2:" + strconv.Itoa(ztPort) + "/healthz/ready: 503 Service Unavailable: no certificate yet",
		}},
		{name: "skew and unknown cert", ztunnel2: true, setup: func() {
			nodes["127.0.0.2"].ztunnelReady = true
			nodes["127.0.0.2"].metrics = "# TYPE weft_ztunnel_config_info gauge\nweft_ztunnel_config_info{version=\"v8\"} 1\n"
		}, wantProblem: []string{"config version skew: v7 on node-1; v8 on node-2"}},
		{name: "agent unhealthy", ztunnel2: true, setup: func() {
			nodes["127.0.0.2"].metrics = healthyMetrics
			nodes["127.0.0.1"].agentHealthy = false
		}, wantProblem: []string{"node node-1: agent health: GET http://127.0.0.1:" + strconv.Itoa(agentPort) + "/healthz: 503 Service Unavailable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup()
			opts := Options{Kube: fake.NewClientset(objects(tt.ztunnel2)...), AgentPort: agentPort, ZtunnelPort: ztPort, OperatorPort: 1,
				Now: func() time.Time { return now }}
			r, err := Check(t.Context(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if r.Healthy != tt.wantHealthy || strings.Join(r.Problems, "\n") != strings.Join(tt.wantProblem, "\n") {
				t.Errorf("Check healthy = %v, problems:\n%s\nwant healthy = %v, problems:\n%s", r.Healthy, strings.Join(r.Problems, "\n"), tt.wantHealthy, strings.Join(tt.wantProblem, "\n"))
			}
			var out bytes.Buffer
			if err := WriteText(&out, r); err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(strings.ReplaceAll(out.String(), strconv.Itoa(ztPort), "<ztunnel-port>"), strconv.Itoa(agentPort), "<agent-port>")
			golden(t, filepath.Join("testdata", strings.ReplaceAll(tt.name, " ", "-")+".golden"), text)
		})
	}
}

func TestWriteJSON(t *testing.T) {
	exp := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	r := &Report{Namespace: "weft-system", Time: now, Healthy: true, Problems: []string{}, Versions: []string{"v7"},
		Operator: Operator{Installed: true, Ready: Probe{true, "1/1 replicas ready"}},
		Nodes:    []Node{{Name: "node-1", IP: "10.0.0.1", Agent: Probe{true, "a ready"}, AgentHealth: Probe{true, "ok"}, Ztunnel: Probe{true, "z ready"}, ZtunnelReady: Probe{true, "ok"}, EnrolledPods: 2, CertExpiry: &exp, ConfigVersion: "v7"}}}
	var out bytes.Buffer
	if err := WriteJSON(&out, r); err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "json.golden"), out.String())
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	testutil.Golden(t, path, got, *update)
}
