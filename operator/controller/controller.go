package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/operator/compile"
)

// Defaults and constants of the controller.
const (
	// DefaultMinInterval is the shortest time between two compiles: changes
	// arriving within it are compiled together, and a change after a quiet
	// period is compiled at once.
	DefaultMinInterval = 50 * time.Millisecond
	// FieldManager is the field manager of every write the operator makes.
	FieldManager = "weft-operator"
)

// The work queue's items. The queue dedups an item that is already
// waiting, which is what makes a burst of changes one compile.
const (
	// keyCompile recompiles the whole set and hands it to every node.
	keyCompile = "compile"
	// keyNodes hands the last compiled set to nodes that appeared and
	// forgets the nodes that left, without compiling.
	keyNodes = "nodes"
)

// retry bounds of a failed work item (a status write the API server
// refused): it is retried with exponential backoff between these.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 30 * time.Second
)

// keptBundles bounds how many recent system versions TrustBundleAt knows.
const keptBundles = 64

// syncLogEvery is how often a controller still waiting for its caches says
// which ones.
const syncLogEvery = 10 * time.Second

// NodeConfig receives each node's compiled resource set;
// *meshstream.Server implements it.
type NodeConfig interface {
	// SetNodes makes resources, as a whole, the set of each of nodes at
	// systemVersion (every node gets the same set). The controller never
	// modifies resources after handing them over.
	SetNodes(nodes []string, resources []*meshv1.Resource, systemVersion string) error
	// DeleteNode forgets the set of a node that left the cluster.
	DeleteNode(node string)
}

// TrustBundle is the mesh CA's trust bundle, which every set carries;
// *ca.Authority implements it.
type TrustBundle interface {
	// TrustBundlePEM returns the roots peers must trust now.
	TrustBundlePEM() []byte
	// Changed returns a channel closed the next time the bundle changes.
	Changed() <-chan struct{}
}

// Options configure a Controller.
type Options struct {
	// Client watches the core, apps and discovery resources. Required.
	Client kubernetes.Interface
	// Dynamic watches the SMI resources and writes TrafficTarget status.
	// Required.
	Dynamic dynamic.Interface
	// Nodes receives the compiled sets. Required.
	Nodes NodeConfig
	// TrustBundle, if set, is compiled into every set and recompiled when
	// it changes.
	TrustBundle TrustBundle
	// TrustDomain, PolicyMode, ClusterDomain and ExcludeNamespaces are
	// compiled into every set as given (see compile.Inputs; "" means the
	// default). New refuses settings that every node would refuse.
	TrustDomain       string
	PolicyMode        string
	ClusterDomain     string
	ExcludeNamespaces []string
	// MinInterval is the shortest time between two compiles; default
	// DefaultMinInterval.
	MinInterval time.Duration
	// Compile defaults to a compile.Compiler's, which recompiles only the
	// pods and Services whose cached objects changed. The controller calls
	// it from one goroutine at a time.
	Compile func(compile.Inputs) compile.Output
	// Registerer receives the controller's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Log defaults to discarding.
	Log *slog.Logger
}

// Controller compiles the cluster into the mesh's resource set whenever
// anything it reads changes, hands the set to every node, and writes
// TrafficTarget status. Its methods are safe for concurrent use; Run runs
// once.
type Controller struct {
	dynamic     dynamic.Interface
	nodeConfig  NodeConfig
	trust       TrustBundle
	settings    compile.Inputs // only the settings are set
	minInterval time.Duration
	compile     func(compile.Inputs) compile.Output
	log         *slog.Logger
	metrics     *metrics
	watch       *watches
	queue       workqueue.TypedRateLimitingInterface[string]

	// Owned by the worker (Run's one goroutine that processes the queue);
	// no lock.

	// last is the last compiled output; nil before the first compile.
	last *compile.Output
	// lastCompile is when the last compile ended.
	lastCompile time.Time
	// handed maps each node the set was handed to to its system version.
	handed map[string]string
	// written remembers the status last written per TrafficTarget, until
	// the watch delivers that write.
	written map[types.NamespacedName]writtenStatus

	// mu guards the fields below.
	mu sync.Mutex
	// systemVersion is the last compiled set's; "" before the first.
	systemVersion string
	// bundles are the trust bundles of the latest system versions, oldest
	// first.
	bundles []versionBundle
}

type versionBundle struct {
	systemVersion string
	bundle        []byte
}

// New returns a Controller; Run starts it. The pod informer (PodInformer)
// may be shared with other users until Run.
func New(opts Options) (*Controller, error) {
	if opts.Client == nil || opts.Dynamic == nil || opts.Nodes == nil {
		return nil, errors.New("create controller: a client, a dynamic client and a node config sink are required")
	}
	if err := opts.settingsCheck(); err != nil {
		return nil, fmt.Errorf("create controller: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		dynamic:    opts.Dynamic,
		nodeConfig: opts.Nodes,
		trust:      opts.TrustBundle,
		settings: compile.Inputs{
			TrustDomain: opts.TrustDomain, PolicyMode: opts.PolicyMode,
			ClusterDomain: opts.ClusterDomain, ExcludeNamespaces: slices.Clone(opts.ExcludeNamespaces),
		},
		minInterval: opts.MinInterval,
		compile:     opts.Compile,
		log:         log.With("component", "controller"),
		metrics:     m,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryMin, retryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "weft-operator"}),
		handed:  map[string]string{},
		written: map[types.NamespacedName]writtenStatus{},
	}
	if c.minInterval <= 0 {
		c.minInterval = DefaultMinInterval
	}
	if c.compile == nil {
		c.compile = new(compile.Compiler).Compile
	}
	if c.watch, err = newWatches(opts.Client, opts.Dynamic, c.handlers()); err != nil {
		return nil, err
	}
	return c, nil
}

// settingsCheck validates the settings as compile.Inputs.Validate does
// (the trust bundle is the CA's, checked when it loads).
func (o *Options) settingsCheck() error {
	in := compile.Inputs{TrustDomain: o.TrustDomain, PolicyMode: o.PolicyMode}
	return in.Validate()
}

// PodInformer returns the controller's pod informer, for other users of the
// same cache (the CA server indexes it). Add indexers before Run.
func (c *Controller) PodInformer() cache.SharedIndexInformer { return c.watch.pods }

// SystemVersion returns the version of the last compiled set; ok is false
// before the first compile (after the caches synced).
func (c *Controller) SystemVersion() (systemVersion string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.systemVersion, c.systemVersion != ""
}

// TrustBundleAt returns the trust bundle compiled into the set of
// systemVersion; ok is false when that version is not one of the latest
// sets. Callers must not modify the bundle.
func (c *Controller) TrustBundleAt(systemVersion string) (bundle []byte, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.bundles) - 1; i >= 0; i-- {
		if c.bundles[i].systemVersion == systemVersion {
			return c.bundles[i].bundle, true
		}
	}
	return nil, false
}

// Run watches and compiles until ctx ends. Nothing is compiled, and no node
// is given a set, before every cache has synced: a partial set would take
// resources away from nodes. It returns nil once ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	c.watch.start(ctx)
	defer func() {
		cancel()
		c.watch.shutdown()
	}()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		c.queue.ShutDown()
		return nil
	})
	g.Go(func() error {
		if !c.waitForSync(ctx) {
			return nil
		}
		c.log.Info("caches synced, compiling")
		c.queue.Add(keyCompile)
		if c.trust != nil {
			g.Go(func() error { return c.followTrustBundle(ctx) })
		}
		return c.work(ctx)
	})
	return g.Wait()
}

// waitForSync waits for every cache, saying now and then which ones it is
// still waiting for (a missing CRD shows here); false when ctx ended.
func (c *Controller) waitForSync(ctx context.Context) bool {
	began := time.Now()
	nextLog := began.Add(syncLogEvery)
	for {
		pending := c.watch.unsynced()
		if len(pending) == 0 {
			return true
		}
		if now := time.Now(); now.After(nextLog) {
			c.log.Warn("still waiting for caches to sync (are the SMI CRDs installed?)", "pending", pending, "waited", now.Sub(began).Round(time.Second))
			nextLog = now.Add(syncLogEvery)
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// followTrustBundle recompiles whenever the trust bundle changes.
func (c *Controller) followTrustBundle(ctx context.Context) error {
	var seen []byte
	for {
		// Take the channel first, then compare: a change between the two
		// is seen by the comparison, one after them closes the channel.
		changed := c.trust.Changed()
		if cur := c.trust.TrustBundlePEM(); seen == nil || !bytes.Equal(cur, seen) {
			seen = append([]byte{}, cur...)
			c.queue.Add(keyCompile)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// work processes the queue until it shuts down, compiling at most once per
// minInterval: what arrives meanwhile waits in the queue, deduplicated.
func (c *Controller) work(ctx context.Context) error {
	for {
		if wait := time.Until(c.lastCompile.Add(c.minInterval)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		key, quit := c.queue.Get()
		if quit {
			return nil
		}
		err := c.process(ctx, key)
		switch {
		case err == nil:
			c.queue.Forget(key)
		case ctx.Err() != nil:
		default:
			c.log.Warn("work item failed, retrying", "item", key, "retries", c.queue.NumRequeues(key), "err", err)
			c.queue.AddRateLimited(key)
		}
		c.queue.Done(key)
	}
}

func (c *Controller) process(ctx context.Context, key string) error {
	switch key {
	case keyCompile:
		out := c.recompile()
		c.handOut(out)
		return c.writeStatuses(ctx, out.Accepted)
	case keyNodes:
		if c.last != nil {
			c.handOut(c.last)
		}
		return nil
	}
	return fmt.Errorf("process work item %q: unknown item", key)
}

// recompile compiles the caches' current state.
func (c *Controller) recompile() *compile.Output {
	began := time.Now()
	in := c.watch.inputs()
	in.TrustDomain, in.PolicyMode = c.settings.TrustDomain, c.settings.PolicyMode
	in.ClusterDomain, in.ExcludeNamespaces = c.settings.ClusterDomain, c.settings.ExcludeNamespaces
	if c.trust != nil {
		in.TrustBundlePEM = c.trust.TrustBundlePEM()
	}
	out := c.compile(in)
	took := time.Since(began)
	c.lastCompile = time.Now()
	c.last = &out
	c.metrics.compileSeconds.Observe(took.Seconds())
	c.metrics.recompiles.Inc()
	c.metrics.resources.Set(float64(len(out.Resources)))

	c.mu.Lock()
	changed := c.systemVersion != out.SystemVersion
	c.systemVersion = out.SystemVersion
	if len(c.bundles) == 0 || c.bundles[len(c.bundles)-1].systemVersion != out.SystemVersion {
		if len(c.bundles) == keptBundles {
			c.bundles = slices.Delete(c.bundles, 0, 1)
		}
		c.bundles = append(c.bundles, versionBundle{systemVersion: out.SystemVersion, bundle: in.TrustBundlePEM})
	}
	c.mu.Unlock()
	if changed {
		c.log.Debug("compiled", "system_version", out.SystemVersion, "resources", len(out.Resources),
			"pods", len(in.Pods), "traffic_targets", len(in.TrafficTargets), "took", took)
	}
	return &out
}

// handOut gives out to every node of the cluster that does not hold it yet
// and forgets nodes that left, in one SetNodes: the set is indexed and
// diffed once for all of them.
func (c *Controller) handOut(out *compile.Output) {
	nodes := listAs[*corev1.Node](c.watch.nodes)
	present := make(map[string]bool, len(nodes))
	var todo []string
	for _, n := range nodes {
		present[n.Name] = true
		if c.handed[n.Name] != out.SystemVersion {
			todo = append(todo, n.Name)
		}
	}
	if len(todo) > 0 {
		if err := c.nodeConfig.SetNodes(todo, out.Resources, out.SystemVersion); err != nil {
			// Only a compile bug gets here (names twice, a body not matching
			// its name): the nodes keep the set they had.
			c.log.Error("hand the compiled set to nodes", "system_version", out.SystemVersion, "nodes", len(todo), "err", err)
		} else {
			for _, name := range todo {
				c.handed[name] = out.SystemVersion
			}
		}
	}
	for name := range c.handed {
		if !present[name] {
			c.nodeConfig.DeleteNode(name)
			delete(c.handed, name)
			c.log.Info("node left the cluster: forgot its set", "node", name)
		}
	}
	c.metrics.nodes.Set(float64(len(nodes)))
}

// handlers are the informers' event handlers: they only queue work. Every
// Add and Delete of an input is a change; an update is one when changed
// says so (a resync delivers an object unchanged).
func (c *Controller) handlers() eventHandlers {
	onCompile := func(any) { c.queue.Add(keyCompile) }
	onNodes := func(any) { c.queue.Add(keyNodes) }
	return eventHandlers{
		// A Node's updates (heartbeats, status) change nothing the set
		// depends on.
		nodes: cache.ResourceEventHandlerFuncs{AddFunc: onNodes, DeleteFunc: onNodes},
		compileIf: func(changed func(old, new metav1.Object) bool) cache.ResourceEventHandler {
			return cache.ResourceEventHandlerFuncs{
				AddFunc:    onCompile,
				DeleteFunc: onCompile,
				UpdateFunc: func(old, new any) {
					o, err1 := meta.Accessor(old)
					n, err2 := meta.Accessor(new)
					if err1 != nil || err2 != nil || changed(o, n) {
						c.queue.Add(keyCompile)
					}
				},
			}
		},
	}
}
