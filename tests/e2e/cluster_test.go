package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/tests/cluster"
)

// TestServiceReachability: 3 echo pods on node0 behind a Service, a client on
// node1 reaches each by pod IP, by the Service VIP (kube-proxy) and by the
// Service's DNS name (CoreDNS), with both reference CNIs.
func TestServiceReachability(t *testing.T) {
	for _, cni := range []cluster.CNI{cluster.CNIBridge, cluster.CNIPTP} {
		t.Run(string(cni), func(t *testing.T) {
			c := cluster.StartForTest(t, cluster.Config{Nodes: 2, CNI: cni})
			ctx := testCtx(t)
			const ns = "shop"
			createNamespace(t, c, ns)
			echoDeployment(t, c, ns, "echo", "node0", 3)
			client := sleepPod("client", "node1")
			if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, client, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create client pod: %v", err)
			}

			// kube-controller-manager fills the EndpointSlice once the pods are Ready.
			var ready map[string]string // pod name → IP
			err := cluster.Poll(ctx, 90*time.Second, 200*time.Millisecond, "3 ready endpoints", func(ctx context.Context) (bool, string, error) {
				ready = readyEndpoints(ctx, t, c, ns, "echo")
				return len(ready) == 3, fmt.Sprintf("ready endpoints %v", ready), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			waitPodRunning(t, c, ns, "client")

			pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pods.Items {
				if p.Spec.NodeName != "node0" {
					t.Errorf("pod %s on %s, want node0", p.Name, p.Spec.NodeName)
				}
				if ready[p.Name] != p.Status.PodIP {
					t.Errorf("EndpointSlice has %s → %q, pod IP is %q", p.Name, ready[p.Name], p.Status.PodIP)
				}
				got := httpGet(t, c, ns, "client", fmt.Sprintf("http://%s:8080/", p.Status.PodIP), 1)
				if got.Pods[p.Name] != 1 {
					t.Errorf("GET pod IP %s answered by %v, want %s", p.Status.PodIP, got.Pods, p.Name)
				}
			}

			svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Sorted(maps.Keys(ready))
			for _, url := range []string{
				"http://" + svc.Spec.ClusterIP + "/",
				"http://echo." + ns + ".svc.cluster.local/",
				"http://echo/", // the pod's search path
			} {
				// kube-proxy programs endpoints asynchronously, one sync after
				// the EndpointSlice changes: poll until one batch of fresh
				// connections succeeds entirely and reaches every endpoint.
				var last getSummary
				err := cluster.Poll(ctx, 30*time.Second, 500*time.Millisecond, "GET "+url+" reaching all pods", func(ctx context.Context) (bool, string, error) {
					last = httpGetAllowFail(t, c, ns, "client", url, 30)
					seen := slices.Sorted(maps.Keys(last.Pods))
					return last.OK == 30 && slices.Equal(seen, want), fmt.Sprintf("%d/30 ok, pods %v, errors %v", last.OK, seen, last.Errors), nil
				})
				if err != nil {
					t.Errorf("%v (want all of %v)", err, want)
				}
			}
		})
	}
}

// readyEndpoints returns the ready endpoints of a Service's EndpointSlices,
// by pod name.
func readyEndpoints(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, svc string) map[string]string {
	t.Helper()
	slices, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
	})
	if err != nil {
		t.Fatalf("list endpointslices: %v", err)
	}
	out := map[string]string{}
	for _, s := range slices.Items {
		for _, ep := range s.Endpoints {
			if ep.TargetRef == nil || len(ep.Addresses) == 0 {
				continue
			}
			if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
				out[ep.TargetRef.Name] = ep.Addresses[0]
			}
		}
	}
	return out
}

// allEndpoints returns every endpoint (ready or not) by pod name.
func allEndpoints(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, svc string) map[string]bool {
	t.Helper()
	list, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
	})
	if err != nil {
		t.Fatalf("list endpointslices: %v", err)
	}
	out := map[string]bool{}
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.TargetRef != nil {
				out[ep.TargetRef.Name] = ep.Conditions.Ready != nil && *ep.Conditions.Ready
			}
		}
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
