package agent

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/weftmesh/weft/daemon/podns"
	"github.com/weftmesh/weft/internal/netns"
)

// Workload is what the node proxy is told about an enrolled pod.
type Workload struct {
	UID, Namespace, Name, ServiceAccount, Node string
	IPs                                        []netip.Addr
	NetnsCookie                                uint64
}

// Proxy is the node proxy, reached over the in-pod handoff protocol. Both
// calls block until the proxy has applied them.
type Proxy interface {
	AddWorkload(ctx context.Context, w Workload, netns *os.File) error
	RemoveWorkload(ctx context.Context, uid string, drain bool) error
}

// Pod is what the datapath needs to redirect one pod.
type Pod struct {
	ID          uint32
	NetnsCookie uint64
	Netns       *os.File
	IP          netip.Addr
	// ProbeSource is the node address kubelet probes the pod from.
	ProbeSource netip.Addr
}

// Datapath redirects enrolled pods' traffic (package bpf/redirect behind an
// adapter). Calls are idempotent.
type Datapath interface {
	Enroll(ctx context.Context, p Pod) error
	Release(ctx context.Context, netnsCookie uint64) error
	// Enrolled lists the netns cookies the (pinned) datapath redirects now.
	Enrolled() (map[uint64]netip.Addr, error)
	// Redirects reports whether the datapath redirects one netns now.
	Redirects(netnsCookie uint64) (bool, error)
}

// Config configures an Agent.
type Config struct {
	NodeName string
	// ProcRoot is where processes are found (/proc).
	ProcRoot string
	// ExcludeNamespaces are never meshed (kube-system and the install
	// namespace are always added).
	ExcludeNamespaces []string
	// InstallNamespace is the agent's own namespace.
	InstallNamespace string
}

// Agent is the node agent's controller. Its methods are safe for concurrent
// use.
type Agent struct {
	cfg      Config
	client   kubernetes.Interface
	log      *slog.Logger
	datapath Datapath
	proxy    Proxy
	excluded map[string]bool
	metrics  *metrics
	recorder record.EventRecorder
	events   record.EventBroadcaster

	factory    informers.SharedInformerFactory
	nsFactory  informers.SharedInformerFactory
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	queue      workqueue.TypedRateLimitingInterface[string]
	hostNetns  netns.ID

	ready chan struct{}

	scanMu sync.Mutex // guards the fields below
	scan   map[string]podns.Process
	scanAt time.Time

	mu       sync.Mutex // guards the fields below
	enrolled map[types.UID]*enrolledPod
	byKey    map[string]types.UID
}

type enrolledPod struct {
	key    string
	uid    types.UID
	netns  *os.File
	cookie uint64
	ip     netip.Addr
	work   Workload
}

// New creates an Agent; Run starts it.
func New(cfg Config, client kubernetes.Interface, dp Datapath, proxy Proxy, reg prometheus.Registerer, log *slog.Logger) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("create agent: node name is required")
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	excluded := map[string]bool{"kube-system": true}
	if cfg.InstallNamespace != "" {
		excluded[cfg.InstallNamespace] = true
	}
	for _, ns := range cfg.ExcludeNamespaces {
		excluded[ns] = true
	}
	self, err := netns.Self()
	if err != nil {
		return nil, err
	}
	defer self.Close()
	hostID, err := netns.Identify(self)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, client: client, log: log, datapath: dp, proxy: proxy, excluded: excluded,
		metrics:   newMetrics(reg),
		hostNetns: hostID,
		ready:     make(chan struct{}),
		enrolled:  map[types.UID]*enrolledPod{},
		byKey:     map[string]types.UID{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 5*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
	}
	// Pods of this node only: the API server filters, so the agent's watch
	// load does not grow with the cluster.
	a.factory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	a.nsFactory = informers.NewSharedInformerFactory(client, 0)
	podInformer := a.factory.Core().V1().Pods()
	nsInformer := a.nsFactory.Core().V1().Namespaces()
	a.pods = podInformer.Lister()
	a.namespaces = nsInformer.Lister()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueuePod,
		UpdateFunc: func(_, obj any) { a.enqueuePod(obj) },
		DeleteFunc: a.enqueuePod,
	}); err != nil {
		return nil, fmt.Errorf("watch pods: %w", err)
	}
	if _, err := nsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueueNamespace,
		UpdateFunc: func(_, obj any) { a.enqueueNamespace(obj) },
		DeleteFunc: a.enqueueNamespace,
	}); err != nil {
		return nil, fmt.Errorf("watch namespaces: %w", err)
	}
	a.events = record.NewBroadcaster()
	a.recorder = a.events.NewRecorder(eventScheme(), corev1.EventSource{Component: "weft-agent", Host: cfg.NodeName})
	return a, nil
}

func (a *Agent) enqueuePod(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		a.queue.Add(key)
	}
}

func (a *Agent) enqueueNamespace(obj any) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			ns, _ = tomb.Obj.(*corev1.Namespace)
		}
	}
	if ns == nil {
		return
	}
	pods, err := a.pods.Pods(ns.Name).List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		a.queue.Add(p.Namespace + "/" + p.Name)
	}
}

// Run starts the informers, reconciles what the pinned datapath holds from a
// previous run, and processes pods until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	defer a.queue.ShutDown()
	a.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.client.CoreV1().Events("")})
	defer a.events.Shutdown()
	a.factory.Start(ctx.Done())
	a.nsFactory.Start(ctx.Done())
	defer a.factory.Shutdown()
	defer a.nsFactory.Shutdown()
	for typ, ok := range a.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("sync %v cache: %w", typ, ctx.Err())
		}
	}
	for typ, ok := range a.nsFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("sync %v cache: %w", typ, ctx.Err())
		}
	}
	if err := a.resync(ctx); err != nil {
		a.log.Warn("reconcile after start", "err", err)
	}
	close(a.ready)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for a.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	a.queue.ShutDown()
	wg.Wait()
	a.mu.Lock()
	for _, e := range a.enrolled {
		e.netns.Close()
	}
	a.mu.Unlock()
	return nil
}

// resync brings the datapath in line after a restart, before any node
// proxy is served: pods that should be meshed and whose netns the pinned
// datapath still redirects are restored as enrolled without a round trip to
// the proxy (so the snapshot a reconnecting proxy gets lists them and it
// keeps their listeners), other pods go through the normal path, and netns
// cookies left by pods that are gone or no longer meshed are released.
func (a *Agent) resync(ctx context.Context) error {
	held, err := a.datapath.Enrolled()
	if err != nil {
		return fmt.Errorf("list enrolled netns: %w", err)
	}
	pods, err := a.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	procs, err := podns.Scan(a.cfg.ProcRoot)
	if err != nil {
		return err
	}
	kept := map[uint64]bool{}
	for _, pod := range pods {
		key := pod.Namespace + "/" + pod.Name
		ns, _ := a.namespaces.Get(pod.Namespace)
		p, found := procs[string(pod.UID)]
		if !decide(ns, pod, a.excluded).Mesh || !found {
			a.queue.Add(key)
			continue
		}
		f, err := podns.OpenNetns(a.cfg.ProcRoot, p)
		if err != nil {
			a.queue.Add(key)
			continue
		}
		cookie, err := netns.Cookie(f)
		if _, ok := held[cookie]; err != nil || !ok {
			f.Close()
			a.queue.Add(key)
			continue
		}
		if err := a.restore(ctx, pod, f, cookie); err != nil {
			f.Close()
			a.log.Warn("restore enrollment", "pod", key, "err", err)
			a.queue.Add(key)
			continue
		}
		kept[cookie] = true
	}
	var errs []error
	for cookie, ip := range held {
		if !kept[cookie] {
			a.log.Info("releasing stale enrollment", "netnsCookie", cookie, "ip", ip)
			if err := a.datapath.Release(ctx, cookie); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// restore re-adopts a pod the pinned datapath still redirects.
func (a *Agent) restore(ctx context.Context, pod *corev1.Pod, f *os.File, cookie uint64) error {
	e := a.newEnrolledPod(pod.Namespace, pod.Name, pod.UID, pod.Spec.ServiceAccountName, podIPs(pod), f, cookie)
	// Idempotent: reuses the pinned map entry and tcx link.
	if err := a.datapath.Enroll(ctx, e.datapathPod()); err != nil {
		return err
	}
	a.remember(e)
	a.log.Info("restored enrollment", "pod", e.key, "netnsCookie", cookie)
	return nil
}

func (a *Agent) newEnrolledPod(ns, name string, uid types.UID, sa string, ips []netip.Addr, f *os.File, cookie uint64) *enrolledPod {
	var ip4 netip.Addr
	for _, ip := range ips {
		if ip.Is4() {
			ip4 = ip
			break
		}
	}
	key := ns + "/" + name
	return &enrolledPod{key: key, uid: uid, netns: f, cookie: cookie, ip: ip4, work: Workload{
		UID: string(uid), Namespace: ns, Name: name, ServiceAccount: sa, Node: a.cfg.NodeName, IPs: ips, NetnsCookie: cookie,
	}}
}

func (e *enrolledPod) datapathPod() Pod {
	return Pod{ID: podID(e.uid), NetnsCookie: e.cookie, Netns: e.netns, IP: e.ip, ProbeSource: probeSource(e.ip)}
}

// remember records an enrolled pod.
func (a *Agent) remember(e *enrolledPod) {
	a.mu.Lock()
	a.enrolled[e.uid] = e
	a.byKey[e.key] = e.uid
	n := len(a.enrolled)
	a.mu.Unlock()
	a.metrics.enrolled.Set(float64(n))
}

// Ready is closed once the agent has synced its caches and restored its
// previous enrollments: serve the node proxy and the CNI plugin after it.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

func (a *Agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.reconcile(ctx, key); err != nil {
		a.log.Warn("reconcile pod", "pod", key, "err", err, "retries", a.queue.NumRequeues(key))
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}

// reconcile enrolls or releases one pod so the datapath matches the policy.
func (a *Agent) reconcile(ctx context.Context, key string) error {
	nsName, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // never valid
	}
	pod, err := a.pods.Pods(nsName).Get(name)
	if apierrors.IsNotFound(err) {
		pod = nil
	} else if err != nil {
		return err
	}
	ns, err := a.namespaces.Get(nsName)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	d := decide(ns, pod, a.excluded)

	a.mu.Lock()
	uid, have := a.byKey[key]
	cur := a.enrolled[uid]
	a.mu.Unlock()
	if have && pod != nil && pod.UID != uid {
		// Same name, new pod: the old one is gone.
		if err := a.release(ctx, cur, false); err != nil {
			return err
		}
		cur, have = nil, false
	}
	switch {
	case d.Mesh && !have:
		if pod.Status.PodIP == "" {
			return nil // no sandbox yet; the status update re-queues it
		}
		return a.enrollFromProc(ctx, pod)
	case !d.Mesh && have:
		a.log.Info("releasing pod", "pod", key, "reason", d.Reason)
		return a.release(ctx, cur, pod != nil)
	}
	return nil
}

// scanProcs returns a scan of /proc that is at most maxAge old. Enrolling a
// namespace of N pods would otherwise read every process of the node N
// times (measured: label-to-redirect p99 of ~57 s for 200 pods).
func (a *Agent) scanProcs(maxAge time.Duration) (map[string]podns.Process, error) {
	a.scanMu.Lock()
	defer a.scanMu.Unlock()
	if a.scan != nil && time.Since(a.scanAt) <= maxAge {
		return a.scan, nil
	}
	procs, err := podns.Scan(a.cfg.ProcRoot)
	if err != nil {
		return nil, err
	}
	a.scan, a.scanAt = procs, time.Now()
	return procs, nil
}

// enrollFromProc finds a running pod's netns through /proc and enrolls it.
func (a *Agent) enrollFromProc(ctx context.Context, pod *corev1.Pod) error {
	procs, err := a.scanProcs(time.Second)
	if err != nil {
		return err
	}
	p, ok := procs[string(pod.UID)]
	if !ok {
		// Started after the cached scan: look again, now.
		if procs, err = a.scanProcs(0); err != nil {
			return err
		}
		p, ok = procs[string(pod.UID)]
	}
	if !ok {
		return fmt.Errorf("enroll pod %s/%s: %w", pod.Namespace, pod.Name, podns.ErrNotFound)
	}
	f, err := podns.OpenNetns(a.cfg.ProcRoot, p)
	if err != nil {
		return err
	}
	// A pod the pinned datapath already redirects (the agent restarted) has
	// the node proxy's listeners in its netns: they are not a conflict.
	cookie, err := netns.Cookie(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("enroll pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	held, err := a.datapath.Redirects(cookie)
	if err != nil {
		f.Close()
		return fmt.Errorf("enroll pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if !held {
		ports, err := podns.ListeningTCPPorts(a.cfg.ProcRoot, p.PID)
		if err != nil {
			f.Close()
			return fmt.Errorf("enroll pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		for _, port := range ProxyPorts {
			if ports[port] {
				f.Close()
				a.metrics.portConflicts.Inc()
				a.recorder.Eventf(pod, corev1.EventTypeWarning, ReasonPortConflict,
					"pod listens on port %d, which the weft node proxy uses in every meshed pod; not enrolled", port)
				a.log.Warn("not enrolling pod: it listens on a node proxy port", "pod", pod.Namespace+"/"+pod.Name, "port", port)
				return nil
			}
		}
	}
	if err := a.enroll(ctx, a.newEnrolledPod(pod.Namespace, pod.Name, pod.UID, pod.Spec.ServiceAccountName, podIPs(pod), f, cookie)); err != nil {
		f.Close()
		return err
	}
	return nil
}

// ReasonPortConflict is the Event reason for pods that listen on a node
// proxy port.
const ReasonPortConflict = "WeftPortConflict"

// enroll hands the pod's netns to the proxy, then turns redirection on. It
// takes ownership of e.netns on success.
func (a *Agent) enroll(ctx context.Context, e *enrolledPod) error {
	began := time.Now()
	id, err := netns.Identify(e.netns)
	if err != nil {
		return err
	}
	if id == a.hostNetns {
		return fmt.Errorf("enroll pod %s: %w", e.key, netns.ErrHostNetns)
	}
	if err := a.proxy.AddWorkload(ctx, e.work, e.netns); err != nil {
		a.metrics.enrolls.WithLabelValues("error").Inc()
		return fmt.Errorf("enroll pod %s: hand netns to node proxy: %w", e.key, err)
	}
	if err := a.datapath.Enroll(ctx, e.datapathPod()); err != nil {
		a.metrics.enrolls.WithLabelValues("error").Inc()
		rmErr := a.proxy.RemoveWorkload(ctx, string(e.uid), false)
		return errors.Join(fmt.Errorf("enroll pod %s: redirect: %w", e.key, err), rmErr)
	}
	a.remember(e)
	a.metrics.enrolls.WithLabelValues("ok").Inc()
	a.metrics.enrollSeconds.Observe(time.Since(began).Seconds())
	a.log.Info("enrolled pod", "pod", e.key, "ip", e.ip, "netnsCookie", e.cookie, "took", time.Since(began))
	return nil
}

// release stops redirection first, then tells the proxy: drain lets the
// proxy finish the pod's open connections (pod unenrolled but alive).
func (a *Agent) release(ctx context.Context, e *enrolledPod, drain bool) error {
	if e == nil {
		return nil
	}
	if err := a.datapath.Release(ctx, e.cookie); err != nil {
		return fmt.Errorf("release pod %s: %w", e.key, err)
	}
	if err := a.proxy.RemoveWorkload(ctx, string(e.uid), drain); err != nil {
		return fmt.Errorf("release pod %s: tell node proxy: %w", e.key, err)
	}
	a.mu.Lock()
	delete(a.enrolled, e.uid)
	if a.byKey[e.key] == e.uid {
		delete(a.byKey, e.key)
	}
	n := len(a.enrolled)
	a.mu.Unlock()
	e.netns.Close()
	a.metrics.enrolled.Set(float64(n))
	a.metrics.releases.Inc()
	a.log.Info("released pod", "pod", e.key, "drain", drain)
	return nil
}

// Snapshot returns the enrolled pods, for a node proxy that (re)connects.
// The files stay owned by the agent.
func (a *Agent) Snapshot() []SnapshotEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]SnapshotEntry, 0, len(a.enrolled))
	for _, e := range a.enrolled {
		out = append(out, SnapshotEntry{Workload: e.work, Netns: e.netns})
	}
	return out
}

// SnapshotEntry is one enrolled pod for the proxy's snapshot.
type SnapshotEntry struct {
	Workload Workload
	Netns    *os.File
}

// EnrollFromCNI enrolls a pod whose sandbox the CNI plugin is setting up,
// before its containers start, from the netns path the runtime gave the
// plugin. It returns whether the pod is meshed and why.
func (a *Agent) EnrollFromCNI(ctx context.Context, ns, name string, uid types.UID, netnsPath string, ips []netip.Addr) (bool, string, error) {
	nsObj, err := a.namespaces.Get(ns)
	if err != nil && !apierrors.IsNotFound(err) {
		return false, "", err
	}
	pod, err := a.pods.Pods(ns).Get(name)
	if err != nil || pod.UID != uid {
		// The informer may lag the kubelet; ask the API server.
		pod, err = a.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get pod %s/%s: %w", ns, name, err)
		}
	}
	d := decide(nsObj, pod, a.excluded)
	if !d.Mesh {
		return false, d.Reason, nil
	}
	a.mu.Lock()
	_, have := a.enrolled[uid]
	a.mu.Unlock()
	if have {
		return true, "already enrolled", nil
	}
	f, err := os.Open(netnsPath)
	if err != nil {
		return false, "", fmt.Errorf("open netns of pod %s/%s: %w", ns, name, err)
	}
	cookie, err := netns.Cookie(f)
	if err != nil {
		f.Close()
		return false, "", fmt.Errorf("enroll pod %s/%s: %w", ns, name, err)
	}
	if err := a.enroll(ctx, a.newEnrolledPod(ns, name, uid, pod.Spec.ServiceAccountName, ips, f, cookie)); err != nil {
		f.Close()
		return false, "", err
	}
	return true, d.Reason, nil
}

// ReleaseFromCNI releases a pod whose sandbox is being torn down (CNI DEL).
func (a *Agent) ReleaseFromCNI(ctx context.Context, uid types.UID) error {
	a.mu.Lock()
	e := a.enrolled[uid]
	a.mu.Unlock()
	return a.release(ctx, e, false)
}

// IsEnrolled reports whether the pod with uid is enrolled (CNI CHECK).
func (a *Agent) IsEnrolled(uid types.UID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.enrolled[uid]
	return ok
}

func podIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func podID(uid types.UID) uint32 {
	h := fnv.New32a()
	h.Write([]byte(uid))
	return h.Sum32()
}

// probeSource is the address this node uses to reach the pod — the source
// of kubelet's probes, which must pass the inbound redirect untouched.
func probeSource(pod netip.Addr) netip.Addr {
	if !pod.IsValid() {
		return netip.Addr{}
	}
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(pod, 9)))
	if err != nil {
		return netip.Addr{}
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}
