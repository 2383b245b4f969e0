package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/weftmesh/weft/operator/compile"
)

// The trust bundle's ConfigMap in every enrolled namespace
// (ARCHITECTURE.md §4: the bundle is published for everyone).
const (
	TrustBundleConfigMap = "weft-trust-bundle"
	TrustBundleKey       = "ca.crt"
	// managedByLabel marks the ConfigMaps the publisher owns: it deletes
	// only those when a namespace leaves the mesh.
	managedByLabel = "app.kubernetes.io/managed-by"
	managedByValue = "weft-operator"
)

// PublisherOptions configure a TrustBundlePublisher.
type PublisherOptions struct {
	// Client watches namespaces and the bundle's ConfigMaps and writes
	// them. Required.
	Client kubernetes.Interface
	// TrustBundle is what is published. Required.
	TrustBundle TrustBundle
	// ExcludeNamespaces never get the ConfigMap (the install namespace,
	// the agent's excluded ones); kube-system never does.
	ExcludeNamespaces []string
	// Log defaults to discarding.
	Log *slog.Logger
}

// TrustBundlePublisher keeps the ConfigMap weft-trust-bundle (key ca.crt,
// the mesh trust bundle in PEM) in every namespace labelled
// weft.io/mesh=enabled, up to date through CA rotations, and deletes the
// ones it created when a namespace leaves the mesh. Each namespace is one
// work item. It is safe for concurrent use; Run runs once.
type TrustBundlePublisher struct {
	client   kubernetes.Interface
	trust    TrustBundle
	excluded map[string]bool
	log      *slog.Logger

	factory, cmFactory informers.SharedInformerFactory
	namespaces         cache.SharedIndexInformer
	configMaps         cache.SharedIndexInformer
	queue              workqueue.TypedRateLimitingInterface[string]
}

// NewTrustBundlePublisher returns a publisher; Run starts it.
func NewTrustBundlePublisher(opts PublisherOptions) (*TrustBundlePublisher, error) {
	if opts.Client == nil || opts.TrustBundle == nil {
		return nil, errors.New("create trust bundle publisher: a client and a trust bundle are required")
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &TrustBundlePublisher{
		client:   opts.Client,
		trust:    opts.TrustBundle,
		excluded: map[string]bool{"kube-system": true},
		log:      log.With("component", "trust-bundle-publisher"),
		factory:  informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithTransform(trim)),
		// Only the bundle's ConfigMaps, never every ConfigMap of the
		// cluster.
		cmFactory: informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", TrustBundleConfigMap).String()
		})),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryMin, retryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "weft-trust-bundle"}),
	}
	for _, ns := range opts.ExcludeNamespaces {
		p.excluded[ns] = true
	}
	p.namespaces = p.factory.Core().V1().Namespaces().Informer()
	p.configMaps = p.cmFactory.Core().V1().ConfigMaps().Informer()
	nsKey := func(obj any) {
		if m, ok := metaOf(obj); ok {
			p.queue.Add(m.GetName())
		}
	}
	if _, err := p.namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: nsKey,
		UpdateFunc: func(old, new any) {
			o, ok1 := old.(*corev1.Namespace)
			n, ok2 := new.(*corev1.Namespace)
			if !ok1 || !ok2 || enrolled(o) != enrolled(n) {
				nsKey(new)
			}
		},
		DeleteFunc: nsKey,
	}); err != nil {
		return nil, fmt.Errorf("watch namespaces: %w", err)
	}
	cmKey := func(obj any) {
		if m, ok := metaOf(obj); ok {
			p.queue.Add(m.GetNamespace())
		}
	}
	if _, err := p.configMaps.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    cmKey,
		UpdateFunc: func(_, new any) { cmKey(new) },
		DeleteFunc: cmKey,
	}); err != nil {
		return nil, fmt.Errorf("watch trust bundle configmaps: %w", err)
	}
	return p, nil
}

// metaOf returns the object's metadata, looking inside a deletion
// tombstone.
func metaOf(obj any) (metav1.Object, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	return m, ok
}

func enrolled(ns *corev1.Namespace) bool {
	return ns != nil && ns.Labels[compile.MeshLabel] == compile.MeshEnabled
}

// Run publishes until ctx ends; it returns nil then.
func (p *TrustBundlePublisher) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	p.factory.Start(ctx.Done())
	p.cmFactory.Start(ctx.Done())
	defer func() {
		cancel()
		p.factory.Shutdown()
		p.cmFactory.Shutdown()
	}()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		p.queue.ShutDown()
		return nil
	})
	g.Go(func() error {
		if !cache.WaitForCacheSync(ctx.Done(), p.namespaces.HasSynced, p.configMaps.HasSynced) {
			return nil
		}
		g.Go(func() error {
			for {
				changed := p.trust.Changed()
				select {
				case <-ctx.Done():
					return nil
				case <-changed:
					p.enqueueAll()
				}
			}
		})
		p.enqueueAll()
		return p.work(ctx)
	})
	return g.Wait()
}

func (p *TrustBundlePublisher) work(ctx context.Context) error {
	for {
		ns, quit := p.queue.Get()
		if quit {
			return nil
		}
		err := p.Reconcile(ctx, ns)
		switch {
		case err == nil:
			p.queue.Forget(ns)
		case ctx.Err() != nil:
		default:
			p.log.Warn("publish the trust bundle, retrying", "namespace", ns, "retries", p.queue.NumRequeues(ns), "err", err)
			p.queue.AddRateLimited(ns)
		}
		p.queue.Done(ns)
	}
}

func (p *TrustBundlePublisher) enqueueAll() {
	for _, ns := range p.namespaces.GetIndexer().ListKeys() {
		p.queue.Add(ns)
	}
}

// Reconcile brings namespace ns's bundle ConfigMap to what it should be:
// the current bundle when ns is enrolled and not excluded, else none of
// the publisher's.
func (p *TrustBundlePublisher) Reconcile(ctx context.Context, ns string) error {
	obj, exists, err := p.namespaces.GetIndexer().GetByKey(ns)
	if err != nil {
		return err
	}
	var nsObj *corev1.Namespace
	if exists {
		nsObj, _ = obj.(*corev1.Namespace)
	}
	var current *corev1.ConfigMap
	if obj, ok, _ := p.configMaps.GetIndexer().GetByKey(ns + "/" + TrustBundleConfigMap); ok {
		current, _ = obj.(*corev1.ConfigMap)
	}
	cms := p.client.CoreV1().ConfigMaps(ns)
	if !enrolled(nsObj) || p.excluded[ns] || nsObj.DeletionTimestamp != nil {
		if current == nil || current.Labels[managedByLabel] != managedByValue {
			return nil
		}
		err := cms.Delete(ctx, TrustBundleConfigMap, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &current.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete configmap %s/%s: %w", ns, TrustBundleConfigMap, err)
		}
		p.log.Info("namespace left the mesh: removed its trust bundle", "namespace", ns)
		return nil
	}
	want := map[string]string{TrustBundleKey: string(p.trust.TrustBundlePEM())}
	if current == nil {
		_, err := cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: TrustBundleConfigMap, Labels: map[string]string{managedByLabel: managedByValue}},
			Data:       want,
		}, metav1.CreateOptions{FieldManager: FieldManager})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create configmap %s/%s: %w", ns, TrustBundleConfigMap, err)
		}
		if err == nil {
			p.log.Info("published the trust bundle", "namespace", ns)
		}
		return err
	}
	if maps.Equal(current.Data, want) && len(current.BinaryData) == 0 && current.Labels[managedByLabel] == managedByValue {
		return nil
	}
	next := current.DeepCopy()
	next.Data, next.BinaryData = want, nil
	if next.Labels == nil {
		next.Labels = map[string]string{}
	}
	next.Labels[managedByLabel] = managedByValue
	if _, err := cms.Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("update configmap %s/%s: %w", ns, TrustBundleConfigMap, err)
	}
	p.log.Info("updated the trust bundle", "namespace", ns)
	return nil
}
