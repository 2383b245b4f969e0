package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	"github.com/weftmesh/weft/operator/compile"
)

// The SMI resources the controller reads.
var (
	TrafficTargetsResource  = accessv1alpha3.SchemeGroupVersion.WithResource("traffictargets")
	TCPRoutesResource       = specsv1alpha4.SchemeGroupVersion.WithResource("tcproutes")
	HTTPRouteGroupsResource = specsv1alpha4.SchemeGroupVersion.WithResource("httproutegroups")
)

// lastAppliedAnnotation is kubectl's copy of the applied manifest: large,
// and never an input.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// watches are the controller's informers. The caches hold typed objects
// (the SMI ones converted from the dynamic client's Unstructured on the way
// in) trimmed of what no compile reads; they are shared and never modified
// after they are stored.
type watches struct {
	factory    informers.SharedInformerFactory
	smiFactory dynamicinformer.DynamicSharedInformerFactory

	namespaces, pods, services, endpointSlices, replicaSets, nodes cache.SharedIndexInformer
	trafficTargets, tcpRoutes, httpRouteGroups                     cache.SharedIndexInformer

	// all maps each informer to its name, for logs.
	all map[string]cache.SharedIndexInformer
}

// eventHandlers are what the informers call on changes.
type eventHandlers struct {
	// nodes is for the Node objects.
	nodes cache.ResourceEventHandler
	// compileIf returns the handler of an input of the compile, which
	// ignores updates for which changed is false.
	compileIf func(changed func(old, new metav1.Object) bool) cache.ResourceEventHandler
}

func newWatches(client kubernetes.Interface, dyn dynamic.Interface, h eventHandlers) (*watches, error) {
	w := &watches{
		factory:    informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(trim)),
		smiFactory: dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
	}
	w.namespaces = w.factory.Core().V1().Namespaces().Informer()
	w.pods = w.factory.Core().V1().Pods().Informer()
	w.services = w.factory.Core().V1().Services().Informer()
	w.endpointSlices = w.factory.Discovery().V1().EndpointSlices().Informer()
	w.replicaSets = w.factory.Apps().V1().ReplicaSets().Informer()
	w.nodes = w.factory.Core().V1().Nodes().Informer()
	w.trafficTargets = w.smiFactory.ForResource(TrafficTargetsResource).Informer()
	w.tcpRoutes = w.smiFactory.ForResource(TCPRoutesResource).Informer()
	w.httpRouteGroups = w.smiFactory.ForResource(HTTPRouteGroupsResource).Informer()
	w.all = map[string]cache.SharedIndexInformer{
		"namespaces": w.namespaces, "pods": w.pods, "services": w.services,
		"endpointslices": w.endpointSlices, "replicasets": w.replicaSets, "nodes": w.nodes,
		"traffictargets": w.trafficTargets, "tcproutes": w.tcpRoutes, "httproutegroups": w.httpRouteGroups,
	}

	for inf, tf := range map[cache.SharedIndexInformer]cache.TransformFunc{
		w.trafficTargets:  typed[accessv1alpha3.TrafficTarget],
		w.tcpRoutes:       typed[specsv1alpha4.TCPRoute],
		w.httpRouteGroups: typed[specsv1alpha4.HTTPRouteGroup],
	} {
		if err := inf.SetTransform(tf); err != nil {
			return nil, fmt.Errorf("convert SMI objects: %w", err)
		}
	}

	type registration struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}
	for name, r := range map[string]registration{
		// A namespace's labels enroll it; a pod's status carries its IP.
		"namespaces":     {w.namespaces, h.compileIf(resourceVersionChanged)},
		"pods":           {w.pods, h.compileIf(resourceVersionChanged)},
		"services":       {w.services, h.compileIf(resourceVersionChanged)},
		"endpointslices": {w.endpointSlices, h.compileIf(resourceVersionChanged)},
		// A ReplicaSet is read only for its owner (the workload name):
		// its status changes with every pod count and is no input.
		"replicasets": {w.replicaSets, h.compileIf(metadataChanged)},
		// Only a status write changes an SMI object without changing its
		// generation: the controller's own, which needs no compile.
		"traffictargets":  {w.trafficTargets, h.compileIf(generationChanged)},
		"tcproutes":       {w.tcpRoutes, h.compileIf(generationChanged)},
		"httproutegroups": {w.httpRouteGroups, h.compileIf(generationChanged)},
		"nodes":           {w.nodes, h.nodes},
	} {
		if _, err := r.inf.AddEventHandler(r.h); err != nil {
			return nil, fmt.Errorf("watch %s: %w", name, err)
		}
	}
	return w, nil
}

func (w *watches) start(ctx context.Context) {
	w.factory.Start(ctx.Done())
	w.smiFactory.Start(ctx.Done())
}

// shutdown waits for the informers to stop; their context must have ended.
func (w *watches) shutdown() {
	w.factory.Shutdown()
	w.smiFactory.Shutdown()
}

// unsynced returns the names of the caches that have not synced, sorted.
func (w *watches) unsynced() []string {
	var out []string
	for name, inf := range w.all {
		if !inf.HasSynced() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// inputs returns the caches' current objects, in the caches' order
// (compile's output does not depend on it).
func (w *watches) inputs() compile.Inputs {
	return compile.Inputs{
		Namespaces:      listAs[*corev1.Namespace](w.namespaces),
		Pods:            listAs[*corev1.Pod](w.pods),
		Services:        listAs[*corev1.Service](w.services),
		EndpointSlices:  listAs[*discoveryv1.EndpointSlice](w.endpointSlices),
		ReplicaSets:     listAs[*appsv1.ReplicaSet](w.replicaSets),
		TrafficTargets:  listAs[*accessv1alpha3.TrafficTarget](w.trafficTargets),
		TCPRoutes:       listAs[*specsv1alpha4.TCPRoute](w.tcpRoutes),
		HTTPRouteGroups: listAs[*specsv1alpha4.HTTPRouteGroup](w.httpRouteGroups),
	}
}

// listAs returns the objects of inf's cache that are a T.
func listAs[T any](inf cache.SharedIndexInformer) []T {
	objs := inf.GetIndexer().List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// trim drops from a watched object what no compile reads, before it is
// cached: managed fields and kubectl's last-applied copy everywhere, and
// all of a Node but its name (a Node's status, with its image list, is
// large, and only which nodes exist matters). It is called on freshly
// decoded objects only, and is idempotent.
func trim(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}, nil
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[lastAppliedAnnotation] != "" {
			a = maps.Clone(a)
			delete(a, lastAppliedAnnotation)
			m.SetAnnotations(a)
		}
	}
	return obj, nil
}

// typed converts an SMI object from the dynamic client into its Go type,
// trimmed like trim. Anything else (an already converted object) passes
// unchanged.
func typed[T any, PT interface {
	*T
	runtime.Object
}](obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	out := PT(new(T))
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), out); err != nil {
		return nil, fmt.Errorf("convert %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return trim(out)
}

func resourceVersionChanged(old, new metav1.Object) bool {
	return old.GetResourceVersion() != new.GetResourceVersion()
}

func generationChanged(old, new metav1.Object) bool {
	return old.GetGeneration() != new.GetGeneration() || !maps.Equal(old.GetLabels(), new.GetLabels())
}

func metadataChanged(old, new metav1.Object) bool {
	return old.GetGeneration() != new.GetGeneration() ||
		!maps.Equal(old.GetLabels(), new.GetLabels()) ||
		!slices.EqualFunc(old.GetOwnerReferences(), new.GetOwnerReferences(), func(a, b metav1.OwnerReference) bool {
			return a.UID == b.UID && a.Kind == b.Kind && a.Name == b.Name && a.APIVersion == b.APIVersion &&
				ptrEqual(a.Controller, b.Controller)
		})
}

func ptrEqual[T comparable](a, b *T) bool {
	return a == b || a != nil && b != nil && *a == *b
}
