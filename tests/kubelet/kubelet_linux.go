package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
)

// kubelet is one node's emulator. Its fields up to mu are set before run and
// never change; it is safe for concurrent use.
type kubelet struct {
	cfg      Config
	log      *slog.Logger
	client   kubernetes.Interface
	net      *podNetwork
	cgroups  string // resolved cgroup2 directory of Config.CgroupRoot
	recorder record.EventRecorder
	services cache.Indexer
	group    *errgroup.Group // pod workers run here; Run waits for it

	mu       sync.Mutex // guards the fields below
	workers  map[types.UID]*podWorker
	finished map[types.UID]bool // pods whose worker is done while the informer still lists them
	stopping bool
}

// Run plays kubelet for cfg.NodeName until ctx is cancelled, then stops every
// pod of the node (preStop, SIGTERM, grace period, kill, CNI DEL, netns
// deletion) and returns; the Pod objects stay. It must run in the node's
// network namespace. log is used as given: the caller names the component
// and node.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	rc.UserAgent = "weft-node-emulator/" + cfg.NodeName
	rc.QPS, rc.Burst = 50, 100
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	k, err := newKubelet(cfg, log, client)
	if err != nil {
		return err
	}
	return k.run(ctx)
}

// newKubelet builds the emulator for a validated cfg.
func newKubelet(cfg Config, log *slog.Logger, client kubernetes.Interface) (*kubelet, error) {
	cgroups, err := resolveCgroupRoot(cfg.CgroupRoot)
	if err != nil {
		return nil, err
	}
	return &kubelet{
		cfg:      cfg,
		log:      log,
		client:   client,
		net:      newPodNetwork(cfg, log),
		cgroups:  cgroups,
		workers:  map[types.UID]*podWorker{},
		finished: map[types.UID]bool{},
	}, nil
}

func (c *Config) setDefaults() {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
}

func (c *Config) validate() error {
	var missing []string
	for name, v := range map[string]string{
		"nodeName": c.NodeName, "nodeIP": c.NodeIP, "kubeconfig": c.Kubeconfig, "root": c.Root,
		"cniConfDir": c.CNIConfDir, "cniBinDir": c.CNIBinDir, "cgroupRoot": c.CgroupRoot,
		"netnsPrefix": c.NetnsPrefix, "shimPath": c.ShimPath,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("validate config: missing %s", strings.Join(missing, ", "))
	}
	return nil
}

func (k *kubelet) podsDir() string { return filepath.Join(k.cfg.Root, "var/lib/kubelet/pods") }

func (k *kubelet) podDir(uid types.UID) string { return filepath.Join(k.podsDir(), string(uid)) }

func (k *kubelet) podCgroup(uid types.UID) string {
	return filepath.Join(k.cgroups, "kubepods", podCgroupName(string(uid)))
}

func (k *kubelet) run(ctx context.Context) error {
	k.log.Info("starting node emulator", "cgroupRoot", k.cgroups, "root", k.cfg.Root)
	if err := k.cleanLeftovers(ctx); err != nil {
		// Leftovers must not stop the node; pods get fresh names anyway.
		k.log.Warn("clean leftovers of a previous run", "err", err)
	}

	// Events outlive ctx a little so the Killing events of shutdown are sent.
	evCtx, evCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer evCancel()
	broadcaster := record.NewBroadcaster(record.WithContext(evCtx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	k.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: k.cfg.NodeName})

	services := k.client.CoreV1().Services(metav1.NamespaceAll)
	svcInformer := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return services.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return services.Watch(ctx, o)
		},
	}, k.client), &corev1.Service{}, 0, cache.Indexers{})
	k.services = svcInformer.GetIndexer()
	// Node credentials may list and watch only the node's own pods.
	pods := k.client.CoreV1().Pods(metav1.NamespaceAll)
	onNode := fields.OneTermEqualSelector("spec.nodeName", k.cfg.NodeName).String()
	podInformer := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = onNode
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = onNode
			return pods.Watch(ctx, o)
		},
	}, k.client), &corev1.Pod{}, 0, cache.Indexers{})
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.podChanged(ctx, obj) },
		UpdateFunc: func(_, obj any) { k.podChanged(ctx, obj) },
		DeleteFunc: k.podRemoved,
	}); err != nil {
		return fmt.Errorf("watch pods: %w", err)
	}

	var g errgroup.Group
	k.group = &g
	g.Go(func() error { k.heartbeat(ctx); return nil })
	g.Go(func() error { svcInformer.RunWithContext(ctx); return nil })
	g.Go(func() error {
		// Service environment variables need the Services first.
		if !cache.WaitForCacheSync(ctx.Done(), svcInformer.HasSynced) {
			return nil
		}
		podInformer.RunWithContext(ctx)
		return nil
	})
	<-ctx.Done()
	k.mu.Lock()
	k.stopping = true
	n := len(k.workers)
	k.mu.Unlock()
	k.log.Info("stopping node emulator", "pods", n)
	err := g.Wait()
	k.log.Info("node emulator stopped")
	return err
}

// podChanged hands a pod to its worker, starting one for a new pod.
func (k *kubelet) podChanged(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if w, ok := k.workers[pod.UID]; ok {
		w.update(pod)
		return
	}
	if k.stopping || k.finished[pod.UID] {
		return
	}
	w := newPodWorker(k, pod)
	k.workers[pod.UID] = w
	k.group.Go(func() error {
		w.run(ctx)
		k.mu.Lock()
		delete(k.workers, pod.UID)
		k.finished[pod.UID] = true
		k.mu.Unlock()
		return nil
	})
}

// podRemoved tells a pod's worker that the pod is gone from the API (deleted
// with grace 0 or force-deleted): it is torn down at once.
func (k *kubelet) podRemoved(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.finished, pod.UID)
	if w, ok := k.workers[pod.UID]; ok {
		w.remove()
	}
}

// serviceList returns every Service the informer knows.
func (k *kubelet) serviceList() []*corev1.Service {
	objs := k.services.List()
	out := make([]*corev1.Service, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*corev1.Service); ok {
			out = append(out, s)
		}
	}
	return out
}

// ConfigMap implements objectSource with a GET (node credentials may not
// list ConfigMaps).
func (k *kubelet) ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	return k.client.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
}

// Secret implements objectSource.
func (k *kubelet) Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return k.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
}

// Token implements tokenSource with the TokenRequest API.
func (k *kubelet) Token(ctx context.Context, namespace, sa string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	return k.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
}

// cleanLeftovers removes what a previous emulator run of this node left:
// processes and cgroups, pod networks and namespaces, pod directories.
func (k *kubelet) cleanLeftovers(ctx context.Context) error {
	var errs []error
	kubepods := filepath.Join(k.cgroups, "kubepods")
	entries, err := os.ReadDir(kubepods)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list pod cgroups: %w", err))
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "pod") {
			k.log.Info("removing leftover pod cgroup", "cgroup", e.Name())
			if err := removeCgroup(ctx, filepath.Join(kubepods, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := k.net.cleanLeftovers(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(k.podsDir()); err != nil {
		errs = append(errs, fmt.Errorf("remove pod dirs: %w", err))
	}
	return errors.Join(errs...)
}
