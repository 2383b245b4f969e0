package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/api/smi"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	splitv1alpha4 "github.com/weftmesh/weft/api/smi/split/v1alpha4"
	"github.com/weftmesh/weft/tests/cluster"
)

// TestSMICRDs installs the chart's SMI CRDs into a real API server with
// kubectl, as Helm would, and checks what a user and weft-operator see:
// upstream SMI manifests apply and are stored unchanged, invalid objects are
// rejected with an error naming the field, status is a separate subresource,
// and kubectl get prints the columns.
func TestSMICRDs(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Config{Nodes: 1, SkipDNS: true, SkipKubeProxy: true})
	k := newKubectl(t, c)
	installCRDs(t, k)
	dyn, err := dynamic.NewForConfig(c.RestConfig)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("upstream manifests apply unchanged", func(t *testing.T) {
		manifests := map[string]string{
			"traffic-access path-specific": upstreamPathSpecific,
			"traffic-access L7":            upstreamL7,
			"traffic-access L4 with UDP":   upstreamL4,
			"traffic-specs header filters": upstreamHeaderFilters,
			"traffic-specs iphone":         upstreamIPhone,
			"traffic-specs tcp ports":      upstreamTCPPorts,
			"traffic-specs tcp all ports":  upstreamTCPAllPorts,
			"traffic-split canary":         upstreamCanary,
			"traffic-split ab-test":        upstreamABTest,
			"traffic-split rollout":        upstreamRollout,
			"osm bookstore":                osmBookstore,
		}
		for name, manifest := range manifests {
			t.Run(name, func(t *testing.T) {
				ctx := testCtx(t)
				k.mustRun(t, manifest, "apply", "-n", "default", "-f", "-")
				t.Cleanup(func() {
					if _, err := k.run(context.Background(), manifest, "delete", "-n", "default", "-f", "-"); err != nil {
						t.Errorf("delete: %v", err)
					}
				})
				for _, o := range parseManifest(t, manifest, "default") {
					checkStoredUnchanged(ctx, t, dyn, o)
				}
			})
		}
	})

	t.Run("invalid objects are rejected naming the field", func(t *testing.T) {
		for name, tc := range invalidObjects {
			t.Run(name, func(t *testing.T) {
				ctx := testCtx(t)
				_, err := k.run(ctx, tc.manifest, append([]string{"apply", "-n", "default", "-f", "-"}, tc.args...)...)
				if err == nil {
					t.Fatalf("kubectl apply accepted\n%s", tc.manifest)
				}
				for _, want := range tc.want {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("kubectl apply error = %v\nwant it to contain %q", err, want)
					}
				}
				o := parseManifest(t, tc.manifest, "default")[0]
				_, err = dyn.Resource(smiKinds[o.Kind].gvr).Namespace(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
				if !apierrors.IsNotFound(err) {
					t.Errorf("get rejected %s %s: err = %v, want NotFound", o.Kind, o.Name, err)
				}
			})
		}
	})

	t.Run("status is a subresource separate from spec", func(t *testing.T) {
		const ns = "status"
		createNamespace(t, c, ns)
		k.mustRun(t, upstreamL4+"\n---\n"+upstreamIPhone+"\n---\n"+upstreamCanary, "apply", "-n", ns, "-f", "-")
		// By kind: the object, and a spec change that bumps metadata.generation.
		cases := map[string]struct {
			name string
			spec func(u *unstructured.Unstructured) error
		}{
			"TrafficTarget": {"protocal-specific", func(u *unstructured.Unstructured) error {
				return unstructured.SetNestedField(u.Object, "changed", "spec", "destination", "name")
			}},
			"HTTPRouteGroup": {"the-routes", func(u *unstructured.Unstructured) error {
				return unstructured.SetNestedSlice(u.Object, []any{map[string]any{"name": "changed"}}, "spec", "matches")
			}},
			"TCPRoute": {"tcp-ports", func(u *unstructured.Unstructured) error {
				return unstructured.SetNestedSlice(u.Object, []any{int64(9999)}, "spec", "matches", "ports")
			}},
			"TrafficSplit": {"canary", func(u *unstructured.Unstructured) error {
				return unstructured.SetNestedField(u.Object, "changed", "spec", "service")
			}},
		}
		for kind, tc := range cases {
			t.Run(kind, func(t *testing.T) {
				checkStatusSubresource(testCtx(t), t, dyn.Resource(smiKinds[kind].gvr).Namespace(ns), tc.name, tc.spec)
			})
		}
	})

	t.Run("kubectl get shows the columns", func(t *testing.T) {
		checkColumns(t, c, k)
	})
}

// installCRDs applies every manifest of the chart's crds/ folder and waits
// until the API server serves the four resources.
func installCRDs(t *testing.T, k *kubectl) {
	t.Helper()
	dir := crdDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) != 4 {
		t.Fatalf("CRD files in %s = %v (err %v), want 4", dir, files, err)
	}
	out := k.mustRun(t, "", "apply", "-f", dir)
	t.Logf("kubectl apply -f %s:\n%s", dir, out)
	names := []string{"crd/traffictargets.access.smi-spec.io", "crd/httproutegroups.specs.smi-spec.io",
		"crd/tcproutes.specs.smi-spec.io", "crd/trafficsplits.split.smi-spec.io"}
	k.mustRun(t, "", append([]string{"wait", "--for=condition=Established", "--timeout=60s"}, names...)...)
	ctx := testCtx(t)
	err = cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, "SMI resources served", func(ctx context.Context) (bool, string, error) {
		_, err := k.run(ctx, "", "get", "traffictargets,httproutegroups,tcproutes,trafficsplits", "-A")
		return err == nil, fmt.Sprint(err), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func createNamespace(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	_, err := c.Client.CoreV1().Namespaces().Create(testCtx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// checkStoredUnchanged: the API server stored the object's spec exactly as
// written (no field pruned or defaulted), and the Go type decodes all of it
// and encodes it back to the same meaning.
func checkStoredUnchanged(ctx context.Context, t *testing.T, dyn dynamic.Interface, o object) {
	t.Helper()
	kind, ok := smiKinds[o.Kind]
	if !ok {
		t.Fatalf("manifest has kind %s, not an SMI kind weft serves", o.Kind)
	}
	u, err := dyn.Resource(kind.gvr).Namespace(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", o.Kind, o.Namespace, o.Name, err)
	}
	stored := jsonValue(t, u.Object["spec"])
	if !reflect.DeepEqual(stored, o.Spec) {
		t.Errorf("%s %s: stored spec = %s\nwant the applied spec %s", o.Kind, o.Name, mustJSON(t, stored), mustJSON(t, o.Spec))
	}
	data, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	typed := kind.newType()
	if err := decodeStrict(data, typed); err != nil {
		t.Fatalf("%s %s: decode into %T: %v\n%s", o.Kind, o.Name, typed, err, data)
	}
	again, _ := jsonValue(t, typed).(map[string]any)
	if got, want := dropEmpty(again["spec"]), dropEmpty(stored); !reflect.DeepEqual(got, want) {
		t.Errorf("%s %s: spec through %T = %s\nwant %s", o.Kind, o.Name, typed, mustJSON(t, got), mustJSON(t, want))
	}
}

// checkStatusSubresource: writing status does not bump generation and
// ignores spec; writing the object does not touch status.
func checkStatusSubresource(ctx context.Context, t *testing.T, client dynamic.ResourceInterface, name string, changeSpec func(*unstructured.Unstructured) error) {
	t.Helper()
	before, err := client.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gen := before.GetGeneration()
	cond := map[string]any{
		"type": smi.ConditionAccepted, "status": "False", "reason": smi.ReasonRouteGroupNotFound,
		"message": "HTTPRouteGroup status/missing not found", "observedGeneration": gen,
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
	}
	obj := before.DeepCopy()
	must(t, unstructured.SetNestedSlice(obj.Object, []any{cond}, "status", "conditions"))
	must(t, unstructured.SetNestedField(obj.Object, gen, "status", "observedGeneration"))
	must(t, changeSpec(obj)) // through /status, this must be ignored
	after, err := client.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	if after.GetGeneration() != gen {
		t.Errorf("generation after a status update = %d, want %d (unchanged)", after.GetGeneration(), gen)
	}
	if got, want := jsonValue(t, after.Object["spec"]), jsonValue(t, before.Object["spec"]); !reflect.DeepEqual(got, want) {
		t.Errorf("spec after a status update that also changed spec = %s, want %s (unchanged)", mustJSON(t, got), mustJSON(t, want))
	}
	conds, _, _ := unstructured.NestedSlice(after.Object, "status", "conditions")
	if len(conds) != 1 || conds[0].(map[string]any)["reason"] != smi.ReasonRouteGroupNotFound {
		t.Errorf("status.conditions after a status update = %v, want the %s condition", conds, smi.ReasonRouteGroupNotFound)
	}

	// Through the main resource, a spec change bumps generation and a
	// status change is ignored.
	obj = after.DeepCopy()
	must(t, changeSpec(obj))
	unstructured.RemoveNestedField(obj.Object, "status")
	updated, err := client.Update(ctx, obj, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if updated.GetGeneration() != gen+1 {
		t.Errorf("generation after a spec update = %d, want %d", updated.GetGeneration(), gen+1)
	}
	if got, _, _ := unstructured.NestedSlice(updated.Object, "status", "conditions"); !reflect.DeepEqual(jsonValue(t, got), jsonValue(t, conds)) {
		t.Errorf("status.conditions after an update that dropped status = %v, want %v (unchanged)", got, conds)
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// checkColumns creates SMI objects with the Go types' typed clients, sets
// their status as weft-operator would, and reads kubectl get.
func checkColumns(t *testing.T, c *cluster.Cluster, k *kubectl) {
	const ns = "columns"
	createNamespace(t, c, ns)
	ctx := testCtx(t)
	access := restClient(t, c, accessv1alpha3.SchemeGroupVersion, accessv1alpha3.AddToScheme)
	specs := restClient(t, c, specsv1alpha4.SchemeGroupVersion, specsv1alpha4.AddToScheme)
	split := restClient(t, c, splitv1alpha4.SchemeGroupVersion, splitv1alpha4.AddToScheme)

	sa := func(name, ns string) accessv1alpha3.IdentityBindingSubject {
		return accessv1alpha3.IdentityBindingSubject{Kind: accessv1alpha3.KindServiceAccount, Name: name, Namespace: ns}
	}
	bookstore := &accessv1alpha3.TrafficTarget{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore"},
		Spec: accessv1alpha3.TrafficTargetSpec{
			Destination: accessv1alpha3.IdentityBindingSubject{Kind: accessv1alpha3.KindServiceAccount, Name: "bookstore", Port: ptr.To[int32](8080)},
			Sources:     []accessv1alpha3.IdentityBindingSubject{sa("bookbuyer", "bookbuyer"), sa("prometheus", "")},
			Rules:       []accessv1alpha3.TrafficTargetRule{{Kind: accessv1alpha3.KindTCPRoute, Name: "bookstore-port"}},
		},
	}
	udp := &accessv1alpha3.TrafficTarget{
		ObjectMeta: metav1.ObjectMeta{Name: "dns"},
		Spec: accessv1alpha3.TrafficTargetSpec{
			Destination: sa("coredns", ""),
			Sources:     []accessv1alpha3.IdentityBindingSubject{sa("client", "")},
			Rules:       []accessv1alpha3.TrafficTargetRule{{Kind: accessv1alpha3.KindUDPRoute, Name: "dns"}},
		},
	}
	route := &specsv1alpha4.TCPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-port"},
		Spec:       specsv1alpha4.TCPRouteSpec{Matches: specsv1alpha4.TCPMatch{Ports: []int32{8080, 8443}}},
	}
	group := &specsv1alpha4.HTTPRouteGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-routes"},
		Spec: specsv1alpha4.HTTPRouteGroupSpec{Matches: []specsv1alpha4.HTTPMatch{{
			Name: "books", PathRegex: "/books(", Methods: []specsv1alpha4.HTTPRouteMethod{specsv1alpha4.HTTPRouteMethodGet},
			Headers: map[string]string{"user-agent": ".*Firefox.*"},
		}}},
	}
	canary := &splitv1alpha4.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Name: "canary"},
		Spec: splitv1alpha4.TrafficSplitSpec{
			Service:  "website",
			Backends: []splitv1alpha4.TrafficSplitBackend{{Service: "website-v1", Weight: 90}, {Service: "website-v2", Weight: 10}},
		},
	}
	for _, o := range []struct {
		client   *rest.RESTClient
		resource string
		obj      runtime.Object
	}{
		{access, "traffictargets", bookstore}, {access, "traffictargets", udp},
		{specs, "tcproutes", route}, {specs, "httproutegroups", group}, {split, "trafficsplits", canary},
	} {
		if err := o.client.Post().Namespace(ns).Resource(o.resource).Body(o.obj).Do(ctx).Into(o.obj); err != nil {
			t.Fatalf("create %s: %v", o.resource, err)
		}
	}

	// Before weft-operator has looked, the status columns are empty.
	got := parseTable(t, k.mustRun(t, "", "get", "traffictargets", "-n", ns))
	if want := []string{"NAME", "DESTINATION", "SOURCES", "ACCEPTED", "REASON", "AGE"}; !slices.Equal(got.header, want) {
		t.Errorf("kubectl get traffictargets header = %v, want %v", got.header, want)
	}
	if row := got.rows["bookstore"]; row["DESTINATION"] != "bookstore" || row["ACCEPTED"] != "" || row["REASON"] != "" {
		t.Errorf("kubectl get traffictargets before status: bookstore row = %v, want DESTINATION bookstore, ACCEPTED and REASON empty", row)
	}

	setAccepted := func(conds *[]metav1.Condition, gen int64, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(conds, metav1.Condition{Type: smi.ConditionAccepted, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	bookstore.Status.ObservedGeneration = bookstore.Generation
	bookstore.Status.SourcesSummary = bookstore.SourcesSummary()
	setAccepted(&bookstore.Status.Conditions, bookstore.Generation, metav1.ConditionTrue, smi.ReasonAccepted, "enforced on every node")
	udp.Status.ObservedGeneration = udp.Generation
	udp.Status.SourcesSummary = udp.SourcesSummary()
	setAccepted(&udp.Status.Conditions, udp.Generation, metav1.ConditionFalse, smi.ReasonUnsupportedKind, "rule 0: weft does not implement UDPRoute; this TrafficTarget allows nothing")
	route.Status.ObservedGeneration = route.Generation
	setAccepted(&route.Status.Conditions, route.Generation, metav1.ConditionTrue, smi.ReasonAccepted, "")
	group.Status.ObservedGeneration = group.Generation
	setAccepted(&group.Status.Conditions, group.Generation, metav1.ConditionFalse, smi.ReasonInvalidMatch, "match books: pathRegex: missing closing )")
	canary.Status.ObservedGeneration = canary.Generation
	canary.Status.BackendsSummary = canary.BackendsSummary()
	setAccepted(&canary.Status.Conditions, canary.Generation, metav1.ConditionFalse, smi.ReasonWaypointRequired, "namespace columns has no waypoint")
	for _, o := range []struct {
		client         *rest.RESTClient
		resource, name string
		obj            runtime.Object
	}{
		{access, "traffictargets", "bookstore", bookstore}, {access, "traffictargets", "dns", udp},
		{specs, "tcproutes", "bookstore-port", route}, {specs, "httproutegroups", "bookstore-routes", group},
		{split, "trafficsplits", "canary", canary},
	} {
		if err := o.client.Put().Namespace(ns).Resource(o.resource).Name(o.name).SubResource("status").Body(o.obj).Do(ctx).Into(o.obj); err != nil {
			t.Fatalf("update status of %s %s: %v", o.resource, o.name, err)
		}
	}

	cases := map[string]struct {
		args   []string
		header []string
		rows   map[string]map[string]string
	}{
		"traffictargets": {
			args:   []string{"get", "traffictargets"},
			header: []string{"NAME", "DESTINATION", "SOURCES", "ACCEPTED", "REASON", "AGE"},
			rows: map[string]map[string]string{
				"bookstore": {"DESTINATION": "bookstore", "SOURCES": "bookbuyer/bookbuyer,columns/prometheus", "ACCEPTED": "True", "REASON": "Accepted"},
				"dns":       {"DESTINATION": "coredns", "SOURCES": "columns/client", "ACCEPTED": "False", "REASON": "UnsupportedKind"},
			},
		},
		"traffictargets wide": {
			args:   []string{"get", "tt", "-o", "wide"},
			header: []string{"NAME", "DESTINATION", "SOURCES", "ACCEPTED", "REASON", "AGE", "MESSAGE"},
			rows: map[string]map[string]string{
				"dns": {"REASON": "UnsupportedKind", "MESSAGE": "rule 0: weft does not implement UDPRoute; this TrafficTarget allows nothing"},
			},
		},
		"tcproutes": {
			args:   []string{"get", "tr"},
			header: []string{"NAME", "PORTS", "ACCEPTED", "REASON", "AGE"},
			rows:   map[string]map[string]string{"bookstore-port": {"PORTS": "[8080,8443]", "ACCEPTED": "True", "REASON": "Accepted"}},
		},
		"trafficsplits": {
			args:   []string{"get", "ts"},
			header: []string{"NAME", "SERVICE", "BACKENDS", "ACCEPTED", "REASON", "AGE"},
			rows:   map[string]map[string]string{"canary": {"SERVICE": "website", "BACKENDS": "website-v1:90,website-v2:10", "ACCEPTED": "False", "REASON": "WaypointRequired"}},
		},
		"httproutegroups wide": {
			args:   []string{"get", "htr", "-o", "wide"},
			header: []string{"NAME", "ACCEPTED", "REASON", "AGE", "MESSAGE"},
			rows: map[string]map[string]string{
				"bookstore-routes": {"ACCEPTED": "False", "REASON": "InvalidMatch", "MESSAGE": "match books: pathRegex: missing closing )"},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			out := k.mustRun(t, "", append(tc.args, "-n", ns)...)
			got := parseTable(t, out)
			if !slices.Equal(got.header, tc.header) {
				t.Errorf("kubectl %v header = %v, want %v\n%s", tc.args, got.header, tc.header, out)
			}
			for name, want := range tc.rows {
				row, ok := got.rows[name]
				if !ok {
					t.Errorf("kubectl %v has no row %s:\n%s", tc.args, name, out)
					continue
				}
				for col, cell := range want {
					if row[col] != cell {
						t.Errorf("kubectl %v: %s %s = %q, want %q\n%s", tc.args, name, col, row[col], cell, out)
					}
				}
			}
		})
	}

	t.Run("category smi lists every kind", func(t *testing.T) {
		out := k.mustRun(t, "", "get", "smi", "-n", ns, "-o", "name")
		for _, want := range []string{
			"traffictarget.access.smi-spec.io/bookstore", "traffictarget.access.smi-spec.io/dns",
			"tcproute.specs.smi-spec.io/bookstore-port", "httproutegroup.specs.smi-spec.io/bookstore-routes",
			"trafficsplit.split.smi-spec.io/canary",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl get smi -o name = %q, want it to list %s", out, want)
			}
		}
	})

	t.Run("typed client reads back what it wrote", func(t *testing.T) {
		var got accessv1alpha3.TrafficTarget
		if err := access.Get().Namespace(ns).Resource("traffictargets").Name("dns").Do(ctx).Into(&got); err != nil {
			t.Fatal(err)
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, smi.ConditionAccepted)
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != smi.ReasonUnsupportedKind || cond.LastTransitionTime.IsZero() {
			t.Errorf("TrafficTarget dns Accepted condition = %+v, want False/%s with a transition time", cond, smi.ReasonUnsupportedKind)
		}
		if got.Status.ObservedGeneration != got.Generation || got.Spec.Rules[0].Kind != accessv1alpha3.KindUDPRoute {
			t.Errorf("TrafficTarget dns = generation %d, observed %d, rules %+v; want observed = generation and a UDPRoute rule",
				got.Generation, got.Status.ObservedGeneration, got.Spec.Rules)
		}
	})

	if t.Failed() {
		out, _ := k.run(context.Background(), "", "get", "smi", "-n", ns, "-o", "wide")
		t.Logf("kubectl get smi -o wide:\n%s", out)
	}
}
