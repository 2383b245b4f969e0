package controller

import (
	"context"
	"fmt"
	"github.com/weftmesh/weft/internal/pki"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/api/smi"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	"github.com/weftmesh/weft/operator/compile"
)

// fakeNodes records what the controller hands to each node, as the config
// stream server would hold it.
type fakeNodes struct {
	mu      sync.Mutex
	sets    map[string]nodeSet
	deleted []string
	calls   int
}

type nodeSet struct {
	version   string
	resources map[string]*meshv1.Resource
}

func (f *fakeNodes) SetNodes(nodes []string, rs []*meshv1.Resource, version string) error {
	for _, node := range nodes {
		if err := f.setNode(node, rs, version); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeNodes) setNode(node string, rs []*meshv1.Resource, version string) error {
	m := make(map[string]*meshv1.Resource, len(rs))
	for _, r := range rs {
		if _, dup := m[r.GetName()]; dup {
			return fmt.Errorf("resource %q twice", r.GetName())
		}
		m[r.GetName()] = r
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sets == nil {
		f.sets = map[string]nodeSet{}
	}
	f.sets[node] = nodeSet{version: version, resources: m}
	f.calls++
	return nil
}

func (f *fakeNodes) DeleteNode(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sets, node)
	f.deleted = append(f.deleted, node)
}

func (f *fakeNodes) set(node string) (nodeSet, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sets[node]
	return s, ok
}

func (f *fakeNodes) nodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.sets {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// fakeTrust is a trust bundle that a test changes.
type fakeTrust struct {
	mu      sync.Mutex
	pem     []byte
	changed chan struct{}
}

func newFakeTrust(pem string) *fakeTrust {
	return &fakeTrust{pem: []byte(pem), changed: make(chan struct{})}
}

func (f *fakeTrust) TrustBundlePEM() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pem
}

func (f *fakeTrust) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeTrust) setBundle(pem string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pem = []byte(pem)
	close(f.changed)
	f.changed = make(chan struct{})
}

// env is a controller running against fake clients.
type env struct {
	client   *fake.Clientset
	dynamic  *dynamicfake.FakeDynamicClient
	nodes    *fakeNodes
	ctrl     *Controller
	compiles *counter
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) add() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

type envOptions struct {
	objects    []runtime.Object // core objects
	smiObjects []runtime.Object // SMI objects (typed; converted for the dynamic fake)
	trust      TrustBundle
	interval   time.Duration
}

func startEnv(tb testing.TB, o envOptions) *env {
	tb.Helper()
	// The dynamic fake holds Unstructured objects only, as the API server
	// serves them: a scheme without the SMI types.
	scheme := runtime.NewScheme()
	var smiObjs []runtime.Object
	for _, obj := range o.smiObjects {
		smiObjs = append(smiObjs, toUnstructured(tb, obj))
	}
	e := &env{
		client: fake.NewClientset(o.objects...),
		dynamic: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
			TrafficTargetsResource:  "TrafficTargetList",
			TCPRoutesResource:       "TCPRouteList",
			HTTPRouteGroupsResource: "HTTPRouteGroupList",
		}, smiObjs...),
		nodes:    &fakeNodes{},
		compiles: &counter{},
	}
	compiler := new(compile.Compiler)
	ctrl, err := New(Options{
		Client:      e.client,
		Dynamic:     e.dynamic,
		Nodes:       e.nodes,
		TrustBundle: o.trust,
		TrustDomain: "cluster.local",
		MinInterval: o.interval,
		Compile: func(in compile.Inputs) compile.Output {
			e.compiles.add()
			return compiler.Compile(in)
		},
		Log: slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	e.ctrl = ctrl
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	return e
}

func toUnstructured(tb testing.TB, obj runtime.Object) *unstructured.Unstructured {
	tb.Helper()
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		tb.Fatal(err)
	}
	return &unstructured.Unstructured{Object: content}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(tb testing.TB, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s: %s", what, why)
		}
		<-tick.C
	}
}

func node(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func pod(ns, name, uid, nodeName, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), ResourceVersion: "1"},
		Spec:       corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "default"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{compile.MeshLabel: compile.MeshEnabled}}}
}

func trafficTarget(ns, name, route string, generation int64) *accessv1alpha3.TrafficTarget {
	return &accessv1alpha3.TrafficTarget{
		TypeMeta:   metav1.TypeMeta{APIVersion: accessv1alpha3.SchemeGroupVersion.String(), Kind: "TrafficTarget"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: generation, ResourceVersion: fmt.Sprint(generation)},
		Spec: accessv1alpha3.TrafficTargetSpec{
			Destination: accessv1alpha3.IdentityBindingSubject{Kind: accessv1alpha3.KindServiceAccount, Name: "server"},
			Sources:     []accessv1alpha3.IdentityBindingSubject{{Kind: accessv1alpha3.KindServiceAccount, Name: "client"}},
			Rules:       []accessv1alpha3.TrafficTargetRule{{Kind: accessv1alpha3.KindTCPRoute, Name: route}},
		},
	}
}

func tcpRoute(ns, name string) *specsv1alpha4.TCPRoute {
	return &specsv1alpha4.TCPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: specsv1alpha4.SchemeGroupVersion.String(), Kind: "TCPRoute"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, ResourceVersion: "1"},
	}
}

// hasResource reports whether node's set holds name.
func (e *env) hasResource(node, name string) (bool, string) {
	s, ok := e.nodes.set(node)
	if !ok {
		return false, fmt.Sprintf("node %s has no set", node)
	}
	_, has := s.resources[name]
	return has, fmt.Sprintf("node %s holds %d resources at %s, not %s", node, len(s.resources), s.version, name)
}

func TestEveryNodeGetsTheSet(t *testing.T) {
	e := startEnv(t, envOptions{objects: []runtime.Object{
		node("n1"), node("n2"), namespace("shop"), pod("shop", "a", "uid-a", "n1", "10.0.0.1"),
	}})
	for _, n := range []string{"n1", "n2"} {
		waitFor(t, "pod a on "+n, func() (bool, string) { return e.hasResource(n, meshv1.WorkloadName("uid-a")) })
	}

	// A pod added later reaches every node.
	ctx := context.Background()
	if _, err := e.client.CoreV1().Pods("shop").Create(ctx, pod("shop", "b", "uid-b", "n2", "10.0.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		waitFor(t, "pod b on "+n, func() (bool, string) { return e.hasResource(n, meshv1.WorkloadName("uid-b")) })
	}
	s1, _ := e.nodes.set("n1")
	s2, _ := e.nodes.set("n2")
	if s1.version != s2.version {
		t.Errorf("nodes hold versions %s and %s, want the same set", s1.version, s2.version)
	}
	if v, ok := e.ctrl.SystemVersion(); !ok || v != s1.version {
		t.Errorf("SystemVersion() = %q, %v, want %q, true", v, ok, s1.version)
	}

	// A deleted pod leaves every node's set.
	if err := e.client.CoreV1().Pods("shop").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		waitFor(t, "pod a gone from "+n, func() (bool, string) {
			has, why := e.hasResource(n, meshv1.WorkloadName("uid-a"))
			return !has, why
		})
	}
}

func TestNodesJoinAndLeave(t *testing.T) {
	e := startEnv(t, envOptions{objects: []runtime.Object{node("n1"), namespace("shop"), pod("shop", "a", "uid-a", "n1", "10.0.0.1")}})
	waitFor(t, "n1's set", func() (bool, string) { return e.hasResource("n1", meshv1.WorkloadName("uid-a")) })
	compiles := e.compiles.get()

	ctx := context.Background()
	if _, err := e.client.CoreV1().Nodes().Create(ctx, node("n2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n2's set", func() (bool, string) { return e.hasResource("n2", meshv1.WorkloadName("uid-a")) })
	if got := e.compiles.get(); got != compiles {
		t.Errorf("a new node cost %d compiles, want 0 (it gets the compiled set)", got-compiles)
	}

	// A Node's own updates (heartbeats) neither compile nor resend.
	e.nodes.mu.Lock()
	calls := e.nodes.calls
	e.nodes.mu.Unlock()
	n2 := node("n2")
	n2.ResourceVersion = "7"
	n2.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if _, err := e.client.CoreV1().Nodes().UpdateStatus(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := e.client.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n1 forgotten", func() (bool, string) {
		got := e.nodes.nodes()
		return slices.Equal(got, []string{"n2"}), fmt.Sprintf("nodes with a set: %v", got)
	})
	e.nodes.mu.Lock()
	deleted, newCalls := slices.Clone(e.nodes.deleted), e.nodes.calls
	e.nodes.mu.Unlock()
	if !slices.Equal(deleted, []string{"n1"}) {
		t.Errorf("DeleteNode calls = %v, want [n1]", deleted)
	}
	if newCalls != calls {
		t.Errorf("SetNode called %d more times after a heartbeat and a node deletion, want 0", newCalls-calls)
	}
	if got := e.compiles.get(); got != compiles {
		t.Errorf("node changes cost %d compiles, want 0", got-compiles)
	}
}

func TestBurstIsCompiledTogether(t *testing.T) {
	const (
		pods     = 300
		interval = 200 * time.Millisecond
	)
	e := startEnv(t, envOptions{objects: []runtime.Object{node("n1"), namespace("shop")}, interval: interval})
	waitFor(t, "the first set", func() (bool, string) { return e.hasResource("n1", meshv1.SettingsName) })
	before := e.compiles.get()
	ctx := context.Background()
	began := time.Now()
	for i := range pods {
		p := pod("shop", fmt.Sprintf("p%d", i), fmt.Sprintf("uid-%d", i), "n1", fmt.Sprintf("10.0.%d.%d", i/250, i%250+1))
		if _, err := e.client.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every pod on n1", func() (bool, string) {
		return e.hasResource("n1", meshv1.WorkloadName(fmt.Sprintf("uid-%d", pods-1)))
	})
	took := time.Since(began)
	s, _ := e.nodes.set("n1")
	if got := len(s.resources); got < pods+1 {
		t.Errorf("n1 holds %d resources, want at least %d", got, pods+1)
	}
	// At most one compile per interval, however many events: one per
	// event would be 300.
	n := e.compiles.get() - before
	most := int(took/interval) + 2
	t.Logf("%d pod adds over %v: %d compiles", pods, took.Round(time.Millisecond), n)
	if n > most || n >= pods {
		t.Errorf("%d pod adds over %v cost %d compiles, want at most %d (one per %v)", pods, took.Round(time.Millisecond), n, most, interval)
	}
}

func TestLoneChangeIsNotDelayed(t *testing.T) {
	// With a long interval, a change after a quiet period still compiles
	// at once: only changes that follow a compile closely wait.
	e := startEnv(t, envOptions{objects: []runtime.Object{node("n1"), namespace("shop")}, interval: 3 * time.Second})
	waitFor(t, "the first set", func() (bool, string) { return e.hasResource("n1", meshv1.SettingsName) })
	// The first compile ended before its set was seen: once the interval
	// has passed since then, the controller is idle and not throttled.
	<-time.After(3 * time.Second)
	start := time.Now()
	if _, err := e.client.CoreV1().Pods("shop").Create(context.Background(), pod("shop", "a", "uid-a", "n1", "10.0.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod a on n1", func() (bool, string) { return e.hasResource("n1", meshv1.WorkloadName("uid-a")) })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a lone change took %v to reach the node, want well under the 3s interval", took)
	}
}

func TestTrustBundleChangeRecompiles(t *testing.T) {
	trust := newFakeTrust("")
	e := startEnv(t, envOptions{objects: []runtime.Object{node("n1")}, trust: trust})
	waitFor(t, "the first set", func() (bool, string) { return e.hasResource("n1", meshv1.SettingsName) })
	first, _ := e.nodes.set("n1")
	if b, ok := e.ctrl.TrustBundleAt(first.version); !ok || len(b) != 0 {
		t.Errorf("TrustBundleAt(first) = %q, %v, want empty, true", b, ok)
	}

	// A real certificate: Compile refuses a bundle that does not parse.
	certPEM, _, err := pki.GenerateRoot("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundle := string(certPEM)
	trust.setBundle(bundle)
	waitFor(t, "a new set", func() (bool, string) {
		s, _ := e.nodes.set("n1")
		return s.version != first.version, "still " + first.version
	})
	s, _ := e.nodes.set("n1")
	got := s.resources[meshv1.SettingsName].GetSettings().GetTrustBundlePem()
	if got != bundle {
		t.Errorf("settings trust bundle = %q, want %q", got, bundle)
	}
	if b, ok := e.ctrl.TrustBundleAt(s.version); !ok || string(b) != bundle {
		t.Errorf("TrustBundleAt(new) = %q, %v, want the new bundle", b, ok)
	}
	if _, ok := e.ctrl.TrustBundleAt("no such version"); ok {
		t.Error("TrustBundleAt(unknown) ok, want not ok")
	}
}

// statusWrites returns the status updates the controller sent.
func (e *env) statusWrites() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, a := range e.dynamic.Actions() {
		if u, ok := a.(k8stesting.UpdateAction); ok && a.GetSubresource() == "status" && a.GetResource() == TrafficTargetsResource {
			out = append(out, u.GetObject().(*unstructured.Unstructured))
		}
	}
	return out
}

func acceptedOf(tb testing.TB, u *unstructured.Unstructured) (metav1.Condition, int64, string) {
	tb.Helper()
	var tt accessv1alpha3.TrafficTarget
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &tt); err != nil {
		tb.Fatal(err)
	}
	for _, c := range tt.Status.Conditions {
		if c.Type == smi.ConditionAccepted {
			return c, tt.Status.ObservedGeneration, tt.Status.SourcesSummary
		}
	}
	tb.Fatalf("status %+v has no Accepted condition", tt.Status)
	return metav1.Condition{}, 0, ""
}

func TestTrafficTargetStatus(t *testing.T) {
	e := startEnv(t, envOptions{
		objects:    []runtime.Object{node("n1"), namespace("shop")},
		smiObjects: []runtime.Object{trafficTarget("shop", "allow", "missing", 1)},
	})
	waitFor(t, "a status write", func() (bool, string) {
		return len(e.statusWrites()) == 1, fmt.Sprintf("%d writes", len(e.statusWrites()))
	})
	w := e.statusWrites()[0]
	cond, observed, summary := acceptedOf(t, w)
	if cond.Status != metav1.ConditionFalse || cond.Reason != smi.ReasonRouteNotFound || cond.ObservedGeneration != 1 || cond.LastTransitionTime.IsZero() {
		t.Errorf("Accepted = %+v, want False/%s at generation 1 with a transition time", cond, smi.ReasonRouteNotFound)
	}
	if observed != 1 || summary != "shop/client" {
		t.Errorf("observedGeneration, sourcesSummary = %d, %q, want 1, %q", observed, summary, "shop/client")
	}

	// An unrelated change recompiles but writes nothing: the status is
	// unchanged.
	ctx := context.Background()
	if _, err := e.client.CoreV1().Pods("shop").Create(ctx, pod("shop", "a", "uid-a", "n1", "10.0.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod a on n1", func() (bool, string) { return e.hasResource("n1", meshv1.WorkloadName("uid-a")) })
	if n := len(e.statusWrites()); n != 1 {
		t.Errorf("%d status writes after an unrelated change, want still 1", n)
	}

	// The route appears: the target becomes Accepted, with a new
	// transition time.
	if _, err := e.dynamic.Resource(TCPRoutesResource).Namespace("shop").Create(ctx, toUnstructured(t, tcpRoute("shop", "missing")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a second status write", func() (bool, string) {
		return len(e.statusWrites()) == 2, fmt.Sprintf("%d writes", len(e.statusWrites()))
	})
	next, _, _ := acceptedOf(t, e.statusWrites()[1])
	if next.Status != metav1.ConditionTrue || next.Reason != smi.ReasonAccepted {
		t.Errorf("Accepted after the route appeared = %+v, want True/%s", next, smi.ReasonAccepted)
	}
	if next.LastTransitionTime.Time.Before(cond.LastTransitionTime.Time) {
		t.Errorf("transition time went back: %v, then %v", cond.LastTransitionTime, next.LastTransitionTime)
	}
	if n := len(e.statusWrites()); n != 2 {
		t.Errorf("%d status writes, want 2", n)
	}
}

func TestDesiredStatus(t *testing.T) {
	then := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	accepted := metav1.Condition{Type: smi.ConditionAccepted, Status: metav1.ConditionTrue, Reason: smi.ReasonAccepted, Message: "ok"}
	current := accessv1alpha3.TrafficTargetStatus{
		ObservedGeneration: 2,
		SourcesSummary:     "shop/client",
		Conditions: []metav1.Condition{
			{Type: smi.ConditionAccepted, Status: metav1.ConditionTrue, Reason: smi.ReasonAccepted, Message: "ok", ObservedGeneration: 2, LastTransitionTime: then},
			{Type: "Other", Status: metav1.ConditionTrue, Reason: "Someone", LastTransitionTime: then},
		},
	}
	tests := []struct {
		name        string
		generation  int64
		cond        metav1.Condition
		wantChanged bool
		wantLTT     bool // the transition time stays then
	}{
		{name: "unchanged", generation: 2, cond: accepted, wantChanged: false, wantLTT: true},
		{name: "new generation", generation: 3, cond: accepted, wantChanged: true, wantLTT: true},
		{name: "new message", generation: 2, cond: metav1.Condition{Type: smi.ConditionAccepted, Status: metav1.ConditionTrue, Reason: smi.ReasonAccepted, Message: "other"}, wantChanged: true, wantLTT: true},
		{name: "flip", generation: 2, cond: metav1.Condition{Type: smi.ConditionAccepted, Status: metav1.ConditionFalse, Reason: smi.ReasonRouteNotFound}, wantChanged: true, wantLTT: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := trafficTarget("shop", "allow", "r", tt.generation)
			before := *current.DeepCopy()
			got, changed := desiredStatus(target, current, tt.cond)
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if got.ObservedGeneration != tt.generation {
				t.Errorf("observedGeneration = %d, want %d", got.ObservedGeneration, tt.generation)
			}
			if len(got.Conditions) != 2 || got.Conditions[1].Type != "Other" {
				t.Errorf("conditions = %+v, want Accepted and the other writer's Other kept", got.Conditions)
			}
			c := got.Conditions[0]
			if c.Status != tt.cond.Status || c.Reason != tt.cond.Reason || c.ObservedGeneration != tt.generation {
				t.Errorf("Accepted = %+v, want %s/%s at generation %d", c, tt.cond.Status, tt.cond.Reason, tt.generation)
			}
			if kept := c.LastTransitionTime.Equal(&then); kept != tt.wantLTT {
				t.Errorf("transition time %v kept = %v, want %v", c.LastTransitionTime, kept, tt.wantLTT)
			}
			if !equalStatus(current, before) {
				t.Errorf("desiredStatus modified its input: %+v, was %+v", current, before)
			}
		})
	}
}

func equalStatus(a, b accessv1alpha3.TrafficTargetStatus) bool {
	return a.ObservedGeneration == b.ObservedGeneration && a.SourcesSummary == b.SourcesSummary &&
		slices.EqualFunc(a.Conditions, b.Conditions, func(x, y metav1.Condition) bool {
			return x.Type == y.Type && x.Status == y.Status && x.Reason == y.Reason && x.Message == y.Message &&
				x.ObservedGeneration == y.ObservedGeneration && x.LastTransitionTime.Equal(&y.LastTransitionTime)
		})
}

func TestTrimKeepsInputsIntact(t *testing.T) {
	p := pod("shop", "a", "uid-a", "n1", "10.0.0.1")
	p.Annotations = map[string]string{lastAppliedAnnotation: "{...}", "keep": "me"}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	got, err := trim(p)
	if err != nil {
		t.Fatal(err)
	}
	gp := got.(*corev1.Pod)
	if gp.ManagedFields != nil || gp.Annotations[lastAppliedAnnotation] != "" || gp.Annotations["keep"] != "me" || gp.Status.PodIP != "10.0.0.1" {
		t.Errorf("trim(pod) = %+v, want managed fields and last-applied gone, the rest kept", gp.ObjectMeta)
	}
	n := node("n1")
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"big"}}}
	gn, _ := trim(n)
	if got := gn.(*corev1.Node); got.Name != "n1" || len(got.Status.Images) != 0 {
		t.Errorf("trim(node) = %+v, want only the name", got)
	}
	tt := toUnstructured(t, trafficTarget("shop", "allow", "r", 4))
	conv, err := typed[accessv1alpha3.TrafficTarget](tt)
	if err != nil {
		t.Fatal(err)
	}
	if got := conv.(*accessv1alpha3.TrafficTarget); got.Generation != 4 || got.Spec.Rules[0].Name != "r" {
		t.Errorf("typed(traffictarget) = %+v, want the same object typed", got)
	}
	if again, _ := typed[accessv1alpha3.TrafficTarget](conv); again != conv {
		t.Errorf("typed(typed object) converted again, want it unchanged")
	}
}
