//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	"github.com/weftmesh/weft/internal/meshstream"
	"github.com/weftmesh/weft/tests/cluster"
)

// The synthetic cluster: cpNamespaces meshed namespaces, each with
// cpServicesPerNS ServiceAccounts, Services (selecting app=svc-<k>) and
// ttResource (sa-<k> may be reached by sa-<k+1>), the pods spread
// evenly over them and over the simulated nodes.
const (
	cpNamespaces    = 10
	cpServicesPerNS = 10
	cpNodeLeaseNS   = "kube-node-lease"
	cpProxySA       = "weft-ztunnel"
	cpServerName    = "weft-operator." + cluster.WeftNamespace + ".svc"
	// The TrafficTarget whose sources the benchmark changes.
	cpTargetNS, cpTarget = "bench-0", "tt-0"
	// cpWorkers bounds concurrent API writes while populating.
	cpWorkers = 32
)

func cpNamespace(i int) string    { return fmt.Sprintf("bench-%d", i) }
func cpNodeName(i int) string     { return fmt.Sprintf("sim-%03d", i) }
func cpPodIP(node, k int) string  { return fmt.Sprintf("10.250.%d.%d", node, k+2) }
func cpNodeIP(node int) string    { return fmt.Sprintf("10.249.%d.%d", node/250, node%250+1) }
func cpSourceID(sa string) string { return "spiffe://cluster.local/ns/" + cpTargetNS + "/sa/" + sa }

// cpBench holds one run's clients and the simulated nodes' views. Its
// methods are called from the test's goroutine; views are updated by the
// stream clients.
type cpBench struct {
	c     *cluster.Cluster
	cfg   cpConfig
	kube  kubernetes.Interface
	dyn   dynamic.Interface
	nodes []string
	views []*nodeView
	// podsPerNode counts each node's pods, for the next IP.
	podsPerNode []int
	// bg is the context of the stream clients and the lease heartbeats,
	// cancelled at Cleanup; wg waits for them.
	bg context.Context
	wg sync.WaitGroup
}

// nodeView is what one node's stream client holds, and the probe of the
// change being measured. It is safe for concurrent use.
type nodeView struct {
	node string

	mu        sync.Mutex // guards the fields below
	version   string
	resources map[string]*meshv1.Resource
	probe     func(map[string]*meshv1.Resource) bool
	hit       time.Time
}

// apply is the stream client's apply function: it keeps the set and times
// the probe. The client ACKs right after it returns.
func (v *nodeView) apply(_ context.Context, u meshstream.Update) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.version, v.resources = u.SystemVersion, u.Resources
	if v.probe != nil && v.hit.IsZero() && v.probe(u.Resources) {
		v.hit = time.Now()
	}
	return nil
}

func newCPBench(ctx context.Context, tb testing.TB, c *cluster.Cluster, cfg cpConfig) *cpBench {
	tb.Helper()
	// The harness's admin client is throttled for tests; populating
	// thousands of objects needs more.
	rc := rest.CopyConfig(c.RestConfig)
	rc.QPS, rc.Burst = 2000, 4000
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		tb.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		tb.Fatal(err)
	}
	b := &cpBench{c: c, cfg: cfg, kube: kube, dyn: dyn, podsPerNode: make([]int, cfg.nodes)}
	for i := range cfg.nodes {
		b.nodes = append(b.nodes, cpNodeName(i))
		b.views = append(b.views, &nodeView{node: cpNodeName(i)})
	}
	bg, stop := context.WithCancel(context.Background())
	b.bg = bg
	tb.Cleanup(func() {
		stop()
		b.wg.Wait()
	})
	return b
}

// parallel runs f(i) for i in [0, n) on cpWorkers goroutines, stopping at
// the first error.
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(cpWorkers)
	for i := range n {
		g.Go(func() error { return f(ctx, i) })
	}
	return g.Wait()
}

// populate creates the SMI CRDs, the simulated nodes (kept Ready by lease
// heartbeats, so that the node lifecycle controller neither taints them
// nor marks their pods NotReady mid-measurement), the namespaces,
// ServiceAccounts, Services, ttResource and pods.
func (b *cpBench) populate(ctx context.Context, tb testing.TB) {
	tb.Helper()
	b.installCRDs(ctx, tb)
	if err := parallel(ctx, len(b.nodes), func(ctx context.Context, i int) error { return b.createNode(ctx, i) }); err != nil {
		tb.Fatal(err)
	}
	b.wg.Go(func() { b.heartbeat() })

	for _, ns := range append([]string{cluster.WeftNamespace}, cpNamespaceNames()...) {
		labels := map[string]string{"weft.io/mesh": "enabled"}
		if ns == cluster.WeftNamespace {
			labels = nil
		}
		if _, err := b.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			tb.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	if err := b.createAccounts(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := b.createPolicies(ctx); err != nil {
		tb.Fatal(err)
	}
	// One node proxy pod per simulated node: what its stream token is
	// bound to.
	if err := parallel(ctx, len(b.nodes), func(ctx context.Context, i int) error {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-" + b.nodes[i], Namespace: cluster.WeftNamespace, Labels: map[string]string{"app": "weft-ztunnel"}},
			Spec:       b.podSpec(i, cpProxySA),
		}
		_, err := b.kube.CoreV1().Pods(cluster.WeftNamespace).Create(ctx, p, metav1.CreateOptions{})
		return err
	}); err != nil {
		tb.Fatalf("create node proxy pods: %v", err)
	}
	began := time.Now()
	if err := parallel(ctx, b.cfg.pods, func(ctx context.Context, g int) error {
		ns, j := cpNamespace(g%cpNamespaces), g/cpNamespaces
		return b.createPod(ctx, ns, fmt.Sprintf("app-%05d", j), j%cpServicesPerNS, g%len(b.nodes), g/len(b.nodes))
	}); err != nil {
		tb.Fatal(err)
	}
	for g := range b.cfg.pods {
		b.podsPerNode[g%len(b.nodes)]++
	}
	tb.Logf("created %d pods with status in %v", b.cfg.pods, time.Since(began).Round(time.Second))
}

func cpNamespaceNames() []string {
	var out []string
	for i := range cpNamespaces {
		out = append(out, cpNamespace(i))
	}
	return out
}

func (b *cpBench) installCRDs(ctx context.Context, tb testing.TB) {
	tb.Helper()
	kubectl, err := b.c.Kubectl()
	if err != nil {
		tb.Fatal(err)
	}
	repo, err := cluster.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	crds := filepath.Join(repo, "install", "helm", "weft", "crds")
	for _, args := range [][]string{
		{"apply", "--server-side", "-f", crds},
		{"wait", "--for=condition=Established", "--timeout=60s", "-f", crds},
	} {
		out, err := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", b.c.Kubeconfig()}, args...)...).CombinedOutput()
		if err != nil {
			tb.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func (b *cpBench) createNode(ctx context.Context, i int) error {
	name := b.nodes[i]
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "weft.io/simulated": "true",
	}}}
	if _, err := b.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	// A patch, not an update: the node lifecycle controller writes the
	// fresh Node at the same time.
	now := metav1.Now()
	st := corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "Simulated",
			LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: cpNodeIP(i)}},
		Capacity:    corev1.ResourceList{corev1.ResourcePods: *resourcePods(1000)},
		Allocatable: corev1.ResourceList{corev1.ResourcePods: *resourcePods(1000)},
	}
	patch, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return err
	}
	if _, err := b.kube.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("set status of node %s: %w", name, err)
	}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: cpNodeLeaseNS},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To[int32](40),
			RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}
	if _, err := b.kube.CoordinationV1().Leases(cpNodeLeaseNS).Create(ctx, lease, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create lease of node %s: %w", name, err)
	}
	return nil
}

// heartbeat renews the simulated nodes' leases every 10 s, as a kubelet
// does, until the bench stops.
func (b *cpBench) heartbeat() {
	ctx := b.bg
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_ = parallel(ctx, len(b.nodes), func(ctx context.Context, i int) error {
			l, err := b.kube.CoordinationV1().Leases(cpNodeLeaseNS).Get(ctx, b.nodes[i], metav1.GetOptions{})
			if err != nil {
				return nil
			}
			l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
			_, _ = b.kube.CoordinationV1().Leases(cpNodeLeaseNS).Update(ctx, l, metav1.UpdateOptions{})
			return nil
		})
	}
}

func (b *cpBench) createAccounts(ctx context.Context) error {
	type account struct{ ns, name string }
	accts := []account{{cluster.WeftNamespace, cpProxySA}}
	type svc struct{ ns, name, app string }
	var svcs []svc
	for _, ns := range cpNamespaceNames() {
		for k := range cpServicesPerNS {
			accts = append(accts, account{ns, fmt.Sprintf("sa-%d", k)})
			svcs = append(svcs, svc{ns, fmt.Sprintf("svc-%d", k), fmt.Sprintf("svc-%d", k)})
		}
	}
	if err := parallel(ctx, len(accts), func(ctx context.Context, i int) error {
		a := accts[i]
		_, err := b.kube.CoreV1().ServiceAccounts(a.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: a.name}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}); err != nil {
		return fmt.Errorf("create service accounts: %w", err)
	}
	return parallel(ctx, len(svcs), func(ctx context.Context, i int) error {
		s := svcs[i]
		_, err := b.kube.CoreV1().Services(s.ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: s.name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": s.app},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}, metav1.CreateOptions{})
		return err
	})
}

func (b *cpBench) createPolicies(ctx context.Context) error {
	for _, ns := range cpNamespaceNames() {
		route := &specsv1alpha4.TCPRoute{
			TypeMeta:   metav1.TypeMeta{APIVersion: specsv1alpha4.SchemeGroupVersion.String(), Kind: "TCPRoute"},
			ObjectMeta: metav1.ObjectMeta{Name: "http", Namespace: ns},
			Spec:       specsv1alpha4.TCPRouteSpec{Matches: specsv1alpha4.TCPMatch{Ports: []int32{8080}}},
		}
		if err := b.createSMI(ctx, tcpRouteResource, route); err != nil {
			return err
		}
		for k := range cpServicesPerNS {
			tt := trafficTargetObject(ns, fmt.Sprintf("tt-%d", k), fmt.Sprintf("sa-%d", k), fmt.Sprintf("sa-%d", (k+1)%cpServicesPerNS))
			if err := b.createSMI(ctx, ttResource, tt); err != nil {
				return err
			}
		}
	}
	return nil
}

// The SMI resources, as the dynamic client names them.
var (
	ttResource       = accessv1alpha3.SchemeGroupVersion.WithResource("traffictargets")
	tcpRouteResource = specsv1alpha4.SchemeGroupVersion.WithResource("tcproutes")
)

func trafficTargetObject(ns, name, dest string, sources ...string) *accessv1alpha3.TrafficTarget {
	tt := &accessv1alpha3.TrafficTarget{
		TypeMeta:   metav1.TypeMeta{APIVersion: accessv1alpha3.SchemeGroupVersion.String(), Kind: "TrafficTarget"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: accessv1alpha3.TrafficTargetSpec{
			Destination: accessv1alpha3.IdentityBindingSubject{Kind: accessv1alpha3.KindServiceAccount, Name: dest},
			Rules:       []accessv1alpha3.TrafficTargetRule{{Kind: accessv1alpha3.KindTCPRoute, Name: "http"}},
		},
	}
	for _, s := range sources {
		tt.Spec.Sources = append(tt.Spec.Sources, accessv1alpha3.IdentityBindingSubject{Kind: accessv1alpha3.KindServiceAccount, Name: s})
	}
	return tt
}

func (b *cpBench) createSMI(ctx context.Context, gvr schema.GroupVersionResource, obj metav1.Object) error {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("encode %s %s/%s: %w", gvr.Resource, obj.GetNamespace(), obj.GetName(), err)
	}
	if _, err := b.dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(ctx, &unstructured.Unstructured{Object: content}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create %s %s/%s: %w", gvr.Resource, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

func resourcePods(n int64) *resource.Quantity { return resource.NewQuantity(n, resource.DecimalSI) }

// podSpec is a pod bound to node i that nothing will run.
func (b *cpBench) podSpec(i int, sa string) corev1.PodSpec {
	return corev1.PodSpec{
		NodeName:           b.nodes[i],
		ServiceAccountName: sa,
		// Nothing mounts a token into a pod that never runs.
		AutomountServiceAccountToken: ptr.To(false),
		Containers: []corev1.Container{{Name: "main", Image: "registry.invalid/app:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		// Should a simulated node turn NotReady anyway, nothing is evicted
		// in the middle of a measurement.
		Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
	}
}

// createPod creates a pod of service k bound to node n, with the k-th IP of
// that node, and reports it Running and Ready through the status
// subresource, as a kubelet would.
func (b *cpBench) createPod(ctx context.Context, ns, name string, k, n, idx int) error {
	p, err := b.kube.CoreV1().Pods(ns).Create(ctx, newAppPod(b, ns, name, k, n), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	return b.reportPod(ctx, p, cpPodIP(n, idx), n)
}

// newAppPod is a pod of service k (app=svc-<k>, ServiceAccount sa-<k>)
// bound to node n.
func newAppPod(b *cpBench, ns, name string, k, n int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": fmt.Sprintf("svc-%d", k)}},
		Spec:       b.podSpec(n, fmt.Sprintf("sa-%d", k)),
	}
}

func (b *cpBench) reportPod(ctx context.Context, p *corev1.Pod, ip string, n int) error {
	p.Status = readyPodStatus(ip, cpNodeIP(n))
	if _, err := b.kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set status of pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}
