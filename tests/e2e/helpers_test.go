package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/tests/cluster"
)

const testapp = "/weft-testapp" // command[0]; the emulator maps it to the image's binary

// appBinary is the test app's path on the host, for Exec.
func appBinary(c *cluster.Cluster) string { return filepath.Join(c.BinDir(), "weft-testapp") }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// createNamespace creates a namespace and waits for its default
// ServiceAccount (made by kube-controller-manager), without which pods are
// refused by the ServiceAccount admission plugin.
func createNamespace(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	ctx := testCtx(t)
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	err := cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, "default ServiceAccount in "+name, func(ctx context.Context) (bool, string, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func echoContainer() corev1.Container {
	return corev1.Container{
		Name:    "echo",
		Image:   cluster.TestAppImage + ":dev",
		Command: []string{testapp},
		Args:    []string{"echo", "--port", "8080"},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
			PeriodSeconds: 1,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
			PeriodSeconds:    1,
			FailureThreshold: 2,
		},
	}
}

func sleepPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name: "main", Image: cluster.TestAppImage + ":dev", Command: []string{testapp}, Args: []string{"sleep"},
			}},
		},
	}
}

// echoDeployment is n echo pods pinned to node behind Service name:80.
func echoDeployment(t *testing.T, c *cluster.Cluster, ns, name, node string, n int32) {
	t.Helper()
	ctx := testCtx(t)
	labels := map[string]string{"app": name}
	_, err := c.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(n),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers:                    []corev1.Container{echoContainer()},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create deployment %s: %v", name, err)
	}
	_, err = c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
}

func waitPodRunning(t *testing.T, c *cluster.Cluster, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := cluster.Poll(testCtx(t), 60*time.Second, 100*time.Millisecond, "pod "+ns+"/"+name+" running", func(ctx context.Context) (bool, string, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pod = p
		running := p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil
		return running, fmt.Sprintf("phase %s, statuses %+v", p.Status.Phase, p.Status.ContainerStatuses), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// getSummary is the JSON `weft-testapp get --json` prints.
type getSummary struct {
	Requests    int            `json:"requests"`
	OK          int            `json:"ok"`
	Errors      []string       `json:"errors"`
	StatusCodes map[string]int `json:"statusCodes"`
	Pods        map[string]int `json:"pods"`
}

// httpGetAllowFail is httpGet for callers that judge failed requests
// themselves.
func httpGetAllowFail(t *testing.T, c *cluster.Cluster, ns, pod, url string, count int) getSummary {
	t.Helper()
	out, _ := c.Exec(testCtx(t), ns, pod, "", appBinary(c), "get", url, "--count", fmt.Sprint(count), "--timeout", "2s", "--json")
	var s getSummary
	if err := json.Unmarshal(out, &s); err != nil {
		s.Errors = append(s.Errors, fmt.Sprintf("decode get output %q: %v", out, err))
	}
	return s
}

// httpGet runs the test app's HTTP client inside a pod.
func httpGet(t *testing.T, c *cluster.Cluster, ns, pod, url string, count int) getSummary {
	t.Helper()
	out, err := c.Exec(testCtx(t), ns, pod, "", appBinary(c), "get", url, "--count", fmt.Sprint(count), "--json")
	if err != nil {
		t.Fatalf("GET %s from %s/%s: %v\n%s", url, ns, pod, err, out)
	}
	var s getSummary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("decode get output %q: %v", out, err)
	}
	return s
}

// waitReachable waits until url answers from a pod: kube-proxy programs a
// new Service VIP asynchronously (about a second after its endpoints change),
// as in any cluster, so the first connections to a fresh Service may fail.
func waitReachable(t *testing.T, c *cluster.Cluster, ns, pod, url string) {
	t.Helper()
	err := cluster.Poll(testCtx(t), 30*time.Second, 200*time.Millisecond, url+" reachable from "+pod, func(ctx context.Context) (bool, string, error) {
		out, err := c.Exec(ctx, ns, pod, "", appBinary(c), "get", url, "--timeout", "2s")
		return err == nil, fmt.Sprintf("%v %s", err, out), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func execCommand(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// allPortsTarget is the manifest of a TCPRoute all-ports and a TrafficTarget
// name in ns letting ServiceAccount source reach ServiceAccount destination
// on every port.
func allPortsTarget(ns, name, destination, source string) string {
	return fmt.Sprintf(`apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: all-ports, namespace: %[1]s}
spec:
  matches: {ports: []}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  destination: {kind: ServiceAccount, name: %[3]s, namespace: %[1]s}
  sources:
  - {kind: ServiceAccount, name: %[4]s, namespace: %[1]s}
  rules:
  - {kind: TCPRoute, name: all-ports}
`, ns, name, destination, source)
}
