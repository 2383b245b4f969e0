package kubelet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Event reasons, as kubelet's.
const (
	eventPulled        = "Pulled"
	eventCreated       = "Created"
	eventStarted       = "Started"
	eventKilling       = "Killing"
	eventUnhealthy     = "Unhealthy"
	eventBackOff       = "BackOff"
	eventFailed        = "Failed"
	eventFailedMount   = "FailedMount"
	eventFailedSandbox = "FailedCreatePodSandBox"
	eventPreStopHook   = "FailedPreStopHook"
	eventPostStartHook = "FailedPostStartHook"
)

// probePostStart marks a failed postStart hook in the probe event stream.
const probePostStart probeKind = "PostStart"

// postStartTimeout bounds a postStart hook (kubelet has no bound).
const postStartTimeout = 2 * time.Minute

// Back-off of container restarts and of failed pod setup: 1s doubling to
// 10s (kubelet caps at 5 min; the emulator favours test speed). A container
// that ran for twice the cap starts over at 1s.
const (
	backoffInitial = time.Second
	backoffMax     = 10 * time.Second
	resyncPeriod   = 10 * time.Second
)

// defaultGrace is the API's default terminationGracePeriodSeconds.
const defaultGrace = 30 * time.Second

// podWorker runs one pod. The informer side (update, remove) is safe for
// concurrent use; everything else runs on run's goroutine.
type podWorker struct {
	k      *kubelet
	uid    types.UID
	log    *slog.Logger
	notify chan struct{} // the pod changed or vanished
	wake   chan struct{} // a process exited or a probe result changed

	mu     sync.Mutex // guards the fields below
	pod    *corev1.Pod
	gone   bool
	probes []probeEvent

	// The fields below belong to run's goroutine.
	group      errgroup.Group // process waiters, probers, kills
	probeCtx   context.Context
	stopProbes context.CancelFunc
	startTime  metav1.Time
	inherited  bool // the pod was already terminal when the worker started
	finished   bool // every container is done: the sandbox is released
	sandboxUp  bool
	netns      string
	podIPs     []string
	volumes    *podVolumes
	volumesUp  bool
	retryAt    time.Time
	retryDelay time.Duration
	initCtrs   []*container
	ctrs       []*container
	lastSent   *corev1.PodStatus
}

// container is the state of one container of the pod across restarts.
type container struct {
	spec      corev1.Container
	init      bool
	status    corev1.ContainerStatus // Ready and Started are computed
	ran       bool                   // an instance ran: the next start is a restart
	cur       *instance              // the running instance
	done      bool                   // it will not run again
	backoff   time.Duration
	nextStart time.Time
	failures  int // consecutive failed start attempts
}

// instance is one run of a container.
type instance struct {
	n         int32
	proc      *proc
	started   time.Time
	env       []string
	workDir   string
	cgroup    string
	cancel    context.CancelFunc // stops its probers
	startupOK bool
	ready     bool
	killing   bool
}

// probeEvent is a prober's changed result.
type probeEvent struct {
	ctr    string
	inst   *instance
	kind   probeKind
	result probeResult
}

func newPodWorker(k *kubelet, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		k:      k,
		uid:    pod.UID,
		log:    k.log.With("pod", pod.Namespace+"/"+pod.Name, "uid", string(pod.UID)),
		notify: make(chan struct{}, 1),
		wake:   make(chan struct{}, 1),
		pod:    pod,
	}
	w.volumes = newPodVolumes(k.cfg.Root, k.podDir(pod.UID), k, k)
	return w
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// update hands the worker the pod's latest version.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	poke(w.notify)
}

// remove tells the worker the pod is gone from the API.
func (w *podWorker) remove() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	poke(w.notify)
}

func (w *podWorker) snapshot() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.gone
}

func (w *podWorker) postProbe(ev probeEvent) {
	w.mu.Lock()
	w.probes = append(w.probes, ev)
	w.mu.Unlock()
	poke(w.wake)
}

func (w *podWorker) takeProbes() []probeEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	evs := w.probes
	w.probes = nil
	return evs
}

// run drives the pod until it is deleted (then it deletes the object) or
// gone, or until ctx ends (then it stops the pod and leaves the object).
func (w *podWorker) run(ctx context.Context) {
	w.probeCtx, w.stopProbes = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		w.stopProbes()
		_ = w.group.Wait()
	}()
	pod, _ := w.snapshot()
	w.adopt(pod)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		pod, gone := w.snapshot()
		switch {
		case gone:
			w.terminate(ctx, pod, 0, "pod removed from the API")
			return
		case ctx.Err() != nil:
			w.terminate(ctx, pod, terminationGrace(pod, false), "node emulator stopping")
			return
		case pod.DeletionTimestamp != nil:
			w.terminate(ctx, pod, terminationGrace(pod, true), "pod deleted")
			w.deleteObject(ctx, pod)
			return
		}
		next := w.sync(ctx, pod)
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-ctx.Done():
		case <-w.notify:
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// terminationGrace is the time a pod's containers get between SIGTERM and
// SIGKILL.
func terminationGrace(pod *corev1.Pod, deleting bool) time.Duration {
	if deleting && pod.DeletionGracePeriodSeconds != nil {
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return defaultGrace
}

// adopt sets up the containers' state from the pod, continuing restart
// counts of a previous emulator run.
func (w *podWorker) adopt(pod *corev1.Pod) {
	w.startTime = now()
	if pod.Status.StartTime != nil {
		w.startTime = *pod.Status.StartTime
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		w.inherited, w.finished = true, true
		w.lastSent = pod.Status.DeepCopy()
	}
	mk := func(spec corev1.Container, init bool, old []corev1.ContainerStatus) *container {
		c := &container{spec: spec, init: init}
		c.status = corev1.ContainerStatus{Name: spec.Name, Image: spec.Image}
		if prev, ok := findStatus(old, spec.Name); ok {
			c.status.RestartCount = prev.RestartCount
			c.status.LastTerminationState = prev.LastTerminationState
			c.ran = prev.ContainerID != "" || prev.RestartCount > 0
			switch {
			case prev.State.Terminated != nil:
				c.status.LastTerminationState = corev1.ContainerState{Terminated: prev.State.Terminated}
			case prev.State.Running != nil:
				c.status.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode:    137,
					Reason:      "ContainerStatusUnknown",
					Message:     "The container could not be located when the node emulator restarted",
					StartedAt:   prev.State.Running.StartedAt,
					FinishedAt:  now(),
					ContainerID: prev.ContainerID,
				}}
			}
		}
		return c
	}
	for _, s := range pod.Spec.InitContainers {
		w.initCtrs = append(w.initCtrs, mk(s, true, pod.Status.InitContainerStatuses))
	}
	for _, s := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, mk(s, false, pod.Status.ContainerStatuses))
	}
	w.log.Info("pod accepted", "phase", pod.Status.Phase, "hostNetwork", pod.Spec.HostNetwork)
}

func (w *podWorker) all() []*container { return append(slices.Clone(w.initCtrs), w.ctrs...) }

func (w *podWorker) find(name string) *container {
	for _, c := range w.all() {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

// sync moves the pod one step on and returns when it next needs a look.
func (w *podWorker) sync(ctx context.Context, pod *corev1.Pod) time.Time {
	t := time.Now()
	next := t.Add(resyncPeriod)
	if w.inherited {
		return next
	}
	w.reap(pod, t)
	w.handleProbes(pod)
	if w.finished {
		w.writeStatus(ctx, pod, false)
		return next
	}
	if phase := w.phase(pod, false); phase == corev1.PodSucceeded || phase == corev1.PodFailed {
		w.log.Info("pod finished", "phase", phase)
		w.finished = true
		w.releaseSandbox(ctx, pod)
		w.writeStatus(ctx, pod, false)
		return next
	}
	if !w.sandboxUp {
		if t.Before(w.retryAt) {
			w.writeStatus(ctx, pod, false)
			return w.retryAt
		}
		if err := w.setUpSandbox(ctx, pod); err != nil {
			w.log.Warn("set up pod sandbox", "err", err)
			w.event(pod, nil, corev1.EventTypeWarning, eventFailedSandbox, "Failed to create pod sandbox: %v", err)
			w.retry(t)
			w.writeStatus(ctx, pod, false)
			return w.retryAt
		}
		w.retryDelay = 0
	}
	if !w.volumesUp || w.volumes.due(t) {
		if err := w.volumes.sync(ctx, pod, w.runtime(pod)); err != nil {
			if !w.volumesUp {
				w.log.Warn("set up volumes", "err", err)
				w.event(pod, nil, corev1.EventTypeWarning, eventFailedMount, "MountVolume.SetUp failed: %v", err)
				w.retry(t)
				w.writeStatus(ctx, pod, false)
				return w.retryAt
			}
			w.log.Warn("refresh volumes", "err", err)
		} else if !w.volumesUp {
			w.volumesUp = true
			w.retryDelay = 0
			w.log.Info("volumes ready", "volumes", len(pod.Spec.Volumes))
		}
	}
	if r := w.volumes.nextRefresh(); r.Before(next) {
		next = r
	}
	w.startContainers(ctx, pod, t)
	for _, c := range w.all() {
		if c.cur == nil && !c.done && c.nextStart.After(t) && c.nextStart.Before(next) {
			next = c.nextStart
		}
	}
	w.writeStatus(ctx, pod, false)
	return next
}

// retry schedules the next attempt of a failed pod setup step.
func (w *podWorker) retry(t time.Time) {
	w.retryDelay = min(max(2*w.retryDelay, backoffInitial), backoffMax)
	w.retryAt = t.Add(w.retryDelay)
}

// runtime is what the downward API knows of the pod at this point.
func (w *podWorker) runtime(pod *corev1.Pod) podRuntime {
	hostname, _ := podHostname(pod, w.k.cfg.ClusterDomain)
	if pod.Spec.HostNetwork {
		hostname = w.k.cfg.NodeName
	}
	return podRuntime{
		PodIPs:      w.podIPs,
		HostIPs:     []string{w.k.cfg.NodeIP},
		Hostname:    hostname,
		Allocatable: nodeCapacity(),
	}
}

func (w *podWorker) netIdentity(pod *corev1.Pod) podNetIdentity {
	return podNetIdentity{UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name}
}

// setUpSandbox creates the pod's network (unless hostNetwork), cgroup and
// DNS files.
func (w *podWorker) setUpSandbox(ctx context.Context, pod *corev1.Pod) error {
	if pod.Spec.HostNetwork {
		w.netns, w.podIPs = "", []string{w.k.cfg.NodeIP}
	} else {
		if atts, _ := w.k.net.cni.GetCachedAttachments(string(pod.UID)); len(atts) > 0 {
			_ = w.k.net.tearDown(ctx, w.netIdentity(pod))
		}
		path, ips, err := w.k.net.setUp(ctx, w.netIdentity(pod))
		if err != nil {
			return err
		}
		w.netns, w.podIPs = path, ips
	}
	if err := ensureCgroup(w.k.podCgroup(pod.UID)); err != nil {
		return err
	}
	if err := w.writeDNSFiles(pod); err != nil {
		return err
	}
	w.sandboxUp = true
	w.log.Info("pod sandbox ready", "podIPs", w.podIPs, "netns", w.netns)
	return nil
}

// writeDNSFiles writes the pod's resolv.conf, hosts and hostname files.
func (w *podWorker) writeDNSFiles(pod *corev1.Pod) error {
	dir := w.k.podDir(pod.UID)
	hostConf, _ := os.ReadFile("/etc/resolv.conf")
	rc := podResolvConf(pod, w.k.cfg.ClusterDNS, w.k.cfg.ClusterDomain, parseResolvConf(hostConf))
	if err := ensureFile(filepath.Join(dir, "resolv.conf"), []byte(rc.String()), 0o644); err != nil {
		return err
	}
	if err := ensureFile(filepath.Join(dir, "etc-hosts"), []byte(podHostsFile(pod, w.podIPs, w.k.cfg.ClusterDomain)), 0o644); err != nil {
		return err
	}
	return ensureFile(filepath.Join(dir, "etc-hostname"), []byte(w.runtime(pod).Hostname+"\n"), 0o644)
}

// releaseSandbox kills whatever is left in the pod's cgroup, detaches the
// pod from the network and removes its namespace and cgroups.
func (w *podWorker) releaseSandbox(ctx context.Context, pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := removeCgroup(ctx, w.k.podCgroup(pod.UID)); err != nil {
		w.log.Warn("remove pod cgroup", "err", err)
	}
	if !pod.Spec.HostNetwork {
		if err := w.k.net.tearDown(ctx, w.netIdentity(pod)); err != nil {
			w.log.Warn("tear down pod network", "err", err)
		}
	}
	if w.sandboxUp {
		w.log.Info("pod sandbox released")
	}
	w.sandboxUp = false
}

// startContainers starts the init containers in order, each after the
// previous one succeeded (sidecars once started), then every container.
func (w *podWorker) startContainers(ctx context.Context, pod *corev1.Pod, t time.Time) {
	due := func(c *container) bool { return !t.Before(c.nextStart) }
	for _, c := range w.initCtrs {
		if isRestartableInit(&c.spec) {
			if c.cur == nil && due(c) {
				w.start(ctx, pod, c)
			}
			if c.cur == nil || !c.cur.startupOK {
				return
			}
			continue
		}
		if c.done {
			if t := c.status.State.Terminated; t != nil && t.ExitCode == 0 {
				continue
			}
			return
		}
		if c.cur == nil && due(c) {
			w.start(ctx, pod, c)
		}
		return
	}
	for _, c := range w.ctrs {
		if c.cur == nil && !c.done && due(c) {
			w.start(ctx, pod, c)
		}
	}
}

// nextDelay returns the container's current back-off and doubles it.
func (c *container) nextDelay() time.Duration {
	d := max(c.backoff, backoffInitial)
	c.backoff = min(2*d, backoffMax)
	return d
}

// waiting records a failed start attempt and schedules the next one.
func (c *container) waiting(t time.Time, reason, msg string) {
	c.failures++
	c.status.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
	c.nextStart = t.Add(c.nextDelay())
}

// start starts one instance of c. Failures leave c waiting with kubelet's
// reason and a back-off.
func (w *podWorker) start(ctx context.Context, pod *corev1.Pod, c *container) {
	t := time.Now()
	bin, err := resolveImage(w.k.cfg.Images, c.spec.Image)
	if err != nil {
		if c.failures == 0 || c.status.State.Waiting == nil || c.status.State.Waiting.Reason != reasonErrImagePull {
			w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Failed to pull image %q: %v", c.spec.Image, err)
			w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Error: %s", reasonErrImagePull)
			c.waiting(t, reasonErrImagePull, err.Error())
		} else {
			w.event(pod, c, corev1.EventTypeNormal, eventBackOff, "Back-off pulling image %q", c.spec.Image)
			c.waiting(t, reasonImagePullBackOff, fmt.Sprintf("Back-off pulling image %q: %v", c.spec.Image, err))
		}
		w.log.Warn("resolve image", "container", c.spec.Name, "image", c.spec.Image)
		return
	}
	c.status.ImageID = imageID(c.spec.Image, bin)
	w.event(pod, c, corev1.EventTypeNormal, eventPulled, "Container image %q already present on machine", c.spec.Image)
	fail := func(reason string, err error) {
		w.log.Warn("create container", "container", c.spec.Name, "reason", reason, "err", err)
		w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Error: %v", err)
		c.waiting(t, reason, err.Error())
	}
	rt := w.runtime(pod)
	svc := serviceEnv(pod.Namespace, pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks, w.k.serviceList())
	envMap, err := containerEnv(ctx, w.k, pod, &c.spec, rt, svc)
	if err != nil {
		fail(reasonCreateConfigError, err)
		return
	}
	lookup := lookupIn(envMap)
	command, args := expandAll(c.spec.Command, lookup), expandAll(c.spec.Args, lookup)
	binary, argv, err := containerCommand(bin, command, args, isExecutableFile)
	if err != nil {
		fail(reasonCreateContainerError, err)
		return
	}
	mounts, err := w.mounts(pod, c, envMap)
	if err != nil {
		fail(reasonCreateConfigError, err)
		return
	}
	n := c.status.RestartCount
	if c.ran {
		n++
	}
	spec := shimSpec{Netns: w.netns, Hostname: rt.Hostname, Mounts: mounts, WorkDir: c.spec.WorkingDir}
	for _, vm := range c.spec.VolumeMounts {
		if p := vm.MountPropagation; p != nil && (*p == corev1.MountPropagationHostToContainer || *p == corev1.MountPropagationBidirectional) {
			// The container must see mounts the host makes later (a pod
			// netns under /var/run/netns): receive propagation everywhere.
			spec.ReceiveHostMounts = true
		}
	}
	if !pod.Spec.HostNetwork && pod.Spec.SetHostnameAsFQDN != nil && *pod.Spec.SetHostnameAsFQDN {
		if _, fqdn := podHostname(pod, w.k.cfg.ClusterDomain); fqdn != "" {
			spec.Hostname = fqdn
		}
	}
	env := finalEnv(envMap, rt.Hostname)
	cgroup := filepath.Join(w.k.podCgroup(pod.UID), c.spec.Name)
	logPath := filepath.Join(w.k.cfg.Root, "var/log/pods",
		fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), c.spec.Name, fmt.Sprintf("%d.log", n))
	w.event(pod, c, corev1.EventTypeNormal, eventCreated, "Created container: %s", c.spec.Name)
	p, err := startProc(ctx, procSpec{
		ShimPath: w.k.cfg.ShimPath, Binary: binary, Args: argv, Env: env,
		Shim: spec, Cgroup: cgroup, LogPath: logPath,
	})
	containerID := fmt.Sprintf("weft://%s/%s/%d", pod.UID, c.spec.Name, n)
	if err != nil {
		if !errors.Is(err, errStart) {
			fail(reasonCreateContainerError, err)
			return
		}
		// The runtime created the container but could not start it.
		w.event(pod, c, corev1.EventTypeWarning, eventFailed, "Error: %v", err)
		w.log.Warn("start container", "container", c.spec.Name, "err", err)
		c.ran, c.failures = true, 0
		c.status.RestartCount = n
		c.status.ContainerID = containerID
		w.exited(pod, c, &corev1.ContainerStateTerminated{
			ExitCode: 128, Reason: reasonStartError, Message: err.Error(),
			StartedAt: metav1.NewTime(t.Truncate(time.Second)), FinishedAt: now(), ContainerID: containerID,
		}, 0, t)
		return
	}
	c.ran, c.failures = true, 0
	inst := &instance{n: n, proc: p, started: t, env: env, workDir: c.spec.WorkingDir, cgroup: cgroup}
	if inst.workDir == "" {
		inst.workDir = "/"
	}
	c.cur = inst
	c.status.RestartCount = n
	c.status.ContainerID = containerID
	c.status.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(t.Truncate(time.Second))}}
	w.group.Go(func() error {
		p.wait()
		poke(w.wake)
		return nil
	})
	w.event(pod, c, corev1.EventTypeNormal, eventStarted, "Started container %s", c.spec.Name)
	w.log.Info("container started", "container", c.spec.Name, "pid", p.pid, "restartCount", n, "binary", binary)
	var pctx context.Context
	pctx, inst.cancel = context.WithCancel(w.probeCtx)
	if c.spec.StartupProbe != nil {
		w.startProber(pctx, pod, c, inst, probeStartup, c.spec.StartupProbe)
	} else {
		inst.startupOK = true
		w.startMainProbers(pctx, pod, c, inst)
	}
	if lc := c.spec.Lifecycle; lc != nil && lc.PostStart != nil {
		h, spec, podIP := lc.PostStart, c.spec, w.podIP()
		w.group.Go(func() error {
			err := w.runHook(pctx, &spec, inst, podIP, h, postStartTimeout)
			if err != nil && pctx.Err() == nil {
				w.event(pod, c, corev1.EventTypeWarning, eventPostStartHook, "PostStartHook failed: %v", err)
				w.postProbe(probeEvent{ctr: spec.Name, inst: inst, kind: probePostStart, result: resultFailure})
			}
			return nil
		})
	}
}

func (w *podWorker) podIP() string {
	if len(w.podIPs) == 0 {
		return ""
	}
	return w.podIPs[0]
}

// runHook runs a lifecycle handler against a running instance, as kubelet
// does: exec in the container, httpGet from the node, or sleep.
func (w *podWorker) runHook(ctx context.Context, ctr *corev1.Container, inst *instance, podIP string, h *corev1.LifecycleHandler, timeout time.Duration) error {
	switch {
	case h.Exec != nil:
		out, err := execInContainer(ctx, w.k.cfg.ShimPath, inst.proc.pid, inst.env, inst.workDir, inst.cgroup, h.Exec.Command, timeout)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("command %q exited with %d: %s", h.Exec.Command, ee.ExitCode(), strings.TrimSpace(string(out)))
		}
		return err
	case h.HTTPGet != nil:
		return probeHTTP(ctx, h.HTTPGet, podIP, ctr, timeout)
	case h.Sleep != nil:
		t := time.NewTimer(time.Duration(h.Sleep.Seconds) * time.Second)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		return nil
	}
	// tcpSocket handlers are deprecated and ignored by kubelet.
	return nil
}

// mounts lists a container's bind mounts: its volume mounts (subPath and
// subPathExpr honoured; API data volumes read-only, as in kubelet) and the
// pod's hosts, hostname and resolv.conf files.
func (w *podWorker) mounts(pod *corev1.Pod, c *container, env map[string]string) ([]shimMount, error) {
	var ms []shimMount
	targets := map[string]bool{}
	for _, vm := range c.spec.VolumeMounts {
		src, apiData, ok := w.volumes.path(vm.Name)
		if !ok {
			return nil, fmt.Errorf("mount volume %q: no such volume", vm.Name)
		}
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expand(vm.SubPathExpr, lookupIn(env))
		}
		if sub != "" {
			if !validPayloadPath(sub) {
				return nil, fmt.Errorf("mount volume %q: invalid subPath %q", vm.Name, sub)
			}
			p := filepath.Join(src, sub)
			if _, err := os.Lstat(p); os.IsNotExist(err) {
				if err := os.MkdirAll(p, 0o755); err != nil {
					return nil, fmt.Errorf("create subPath %q of volume %q: %w", sub, vm.Name, err)
				}
			}
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil, fmt.Errorf("resolve subPath %q of volume %q: %w", sub, vm.Name, err)
			}
			root, _ := filepath.EvalSymlinks(src)
			if real != root && !strings.HasPrefix(real, root+"/") {
				return nil, fmt.Errorf("mount volume %q: subPath %q leaves the volume", vm.Name, sub)
			}
			src = real
		}
		target := filepath.Clean(vm.MountPath)
		targets[target] = true
		ms = append(ms, shimMount{Source: src, Target: target, ReadOnly: vm.ReadOnly || apiData})
	}
	dir := w.k.podDir(pod.UID)
	if !pod.Spec.HostNetwork {
		if !targets["/etc/hosts"] {
			ms = append(ms, shimMount{Source: filepath.Join(dir, "etc-hosts"), Target: "/etc/hosts"})
		}
		if !targets["/etc/hostname"] {
			ms = append(ms, shimMount{Source: filepath.Join(dir, "etc-hostname"), Target: "/etc/hostname"})
		}
	}
	if !targets["/etc/resolv.conf"] {
		ms = append(ms, shimMount{Source: filepath.Join(dir, "resolv.conf"), Target: "/etc/resolv.conf"})
	}
	// Parents before children, as runtimes order mounts.
	slices.SortStableFunc(ms, func(a, b shimMount) int {
		return cmp.Compare(strings.Count(a.Target, "/"), strings.Count(b.Target, "/"))
	})
	return ms, nil
}

// reap records the exits of container processes.
func (w *podWorker) reap(pod *corev1.Pod, t time.Time) {
	for _, c := range w.all() {
		inst := c.cur
		if inst == nil || !inst.proc.exited() {
			continue
		}
		reason := reasonCompleted
		if inst.proc.exitCode != 0 {
			reason = reasonError
		}
		w.exited(pod, c, &corev1.ContainerStateTerminated{
			ExitCode:    inst.proc.exitCode,
			Reason:      reason,
			StartedAt:   metav1.NewTime(inst.started.Truncate(time.Second)),
			FinishedAt:  metav1.NewTime(inst.proc.finished.Truncate(time.Second)),
			ContainerID: c.status.ContainerID,
		}, inst.proc.finished.Sub(inst.started), t)
	}
}

// exited moves c to its state after an instance ended: a restart after the
// back-off, or terminated for good.
func (w *podWorker) exited(pod *corev1.Pod, c *container, term *corev1.ContainerStateTerminated, ran time.Duration, t time.Time) {
	if inst := c.cur; inst != nil {
		inst.cancel()
		// Like the end of a PID namespace: nothing of the container survives
		// its main process.
		if err := killCgroup(inst.cgroup); err != nil {
			w.log.Warn("kill container cgroup", "container", c.spec.Name, "err", err)
		}
		c.cur = nil
	}
	w.log.Info("container exited", "container", c.spec.Name, "exitCode", term.ExitCode, "reason", term.Reason)
	restart := false
	switch {
	case isRestartableInit(&c.spec):
		restart = true
	case c.init:
		restart = term.ExitCode != 0 && pod.Spec.RestartPolicy != corev1.RestartPolicyNever
	default:
		restart = pod.Spec.RestartPolicy == corev1.RestartPolicyAlways ||
			pod.Spec.RestartPolicy == "" ||
			pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && term.ExitCode != 0
	}
	if !restart {
		c.status.State = corev1.ContainerState{Terminated: term}
		c.done = true
		return
	}
	if ran >= 2*backoffMax {
		c.backoff = 0
	}
	d := c.nextDelay()
	c.nextStart = t.Add(d)
	c.status.LastTerminationState = corev1.ContainerState{Terminated: term}
	c.status.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason:  reasonCrashLoopBackOff,
		Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", d, c.spec.Name, pod.Name, pod.Namespace, pod.UID),
	}}
	w.event(pod, c, corev1.EventTypeWarning, eventBackOff, "Back-off restarting failed container %s in pod %s_%s(%s)", c.spec.Name, pod.Name, pod.Namespace, pod.UID)
}

// handleProbes applies the probers' changed results.
func (w *podWorker) handleProbes(pod *corev1.Pod) {
	for _, ev := range w.takeProbes() {
		c := w.find(ev.ctr)
		if c == nil || c.cur != ev.inst || ev.inst.proc.exited() {
			continue // a result for an instance that is gone
		}
		inst := ev.inst
		switch ev.kind {
		case probeStartup:
			if ev.result == resultSuccess {
				inst.startupOK = true
				var pctx context.Context
				pctx, cancel := context.WithCancel(w.probeCtx)
				prev := inst.cancel
				inst.cancel = func() { prev(); cancel() }
				w.startMainProbers(pctx, pod, c, inst)
			} else {
				w.kill(pod, c, inst, "failed startup probe, will be restarted", c.spec.StartupProbe)
			}
		case probeReadiness:
			inst.ready = ev.result == resultSuccess
			w.log.Info("readiness changed", "container", c.spec.Name, "ready", inst.ready)
		case probeLiveness:
			if ev.result == resultFailure {
				w.kill(pod, c, inst, "failed liveness probe, will be restarted", c.spec.LivenessProbe)
			}
		case probePostStart:
			w.kill(pod, c, inst, "FailedPostStartHook", nil)
		}
	}
}

// kill stops one instance (SIGTERM, then SIGKILL after the grace period);
// its exit is then reaped like any other.
func (w *podWorker) kill(pod *corev1.Pod, c *container, inst *instance, why string, probe *corev1.Probe) {
	if inst.killing {
		return
	}
	inst.killing = true
	grace := terminationGrace(pod, false)
	if probe != nil && probe.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*probe.TerminationGracePeriodSeconds) * time.Second
	}
	w.event(pod, c, corev1.EventTypeNormal, eventKilling, "Container %s %s", c.spec.Name, why)
	w.log.Info("killing container", "container", c.spec.Name, "why", why, "grace", grace)
	inst.proc.signal(unix.SIGTERM)
	w.group.Go(func() error {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-inst.proc.done:
		case <-t.C:
			inst.proc.signal(unix.SIGKILL)
			_ = killCgroup(inst.cgroup)
		}
		return nil
	})
}

// startMainProbers starts the liveness and readiness probers of an instance
// whose startup is done.
func (w *podWorker) startMainProbers(ctx context.Context, pod *corev1.Pod, c *container, inst *instance) {
	if c.spec.LivenessProbe != nil {
		w.startProber(ctx, pod, c, inst, probeLiveness, c.spec.LivenessProbe)
	}
	if c.spec.ReadinessProbe != nil {
		w.startProber(ctx, pod, c, inst, probeReadiness, c.spec.ReadinessProbe)
	} else {
		inst.ready = true
	}
}

// startProber runs one probe of an instance on its period until ctx ends,
// a startup probe succeeds, or a liveness or startup probe fails.
func (w *podWorker) startProber(ctx context.Context, pod *corev1.Pod, c *container, inst *instance, kind probeKind, p *corev1.Probe) {
	initial, period, timeout := probeTiming(p)
	ctr, podIP := c.spec, w.podIP()
	w.group.Go(func() error {
		th := newProbeThresholds(p, kind)
		timer := time.NewTimer(max(time.Until(inst.started.Add(initial)), 0))
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
			err := w.probeOnce(ctx, p, &ctr, inst, podIP, timeout)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				w.event(pod, c, corev1.EventTypeWarning, eventUnhealthy, "%s probe failed: %v", kind, err)
			}
			res, changed := th.observe(err == nil)
			if changed {
				w.postProbe(probeEvent{ctr: ctr.Name, inst: inst, kind: kind, result: res})
			}
			if (kind == probeStartup && res == resultSuccess) ||
				((kind == probeLiveness || kind == probeStartup) && res == resultFailure) {
				return nil
			}
			timer.Reset(period)
		}
	})
}

// probeOnce runs one probe attempt from the node, as kubelet does.
func (w *podWorker) probeOnce(ctx context.Context, p *corev1.Probe, ctr *corev1.Container, inst *instance, podIP string, timeout time.Duration) error {
	switch {
	case p.Exec != nil:
		out, err := execInContainer(ctx, w.k.cfg.ShimPath, inst.proc.pid, inst.env, inst.workDir, inst.cgroup, p.Exec.Command, timeout)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("command %q exited with %d: %s", p.Exec.Command, ee.ExitCode(), strings.TrimSpace(string(out)))
		}
		return err
	case p.HTTPGet != nil:
		return probeHTTP(ctx, p.HTTPGet, podIP, ctr, timeout)
	case p.TCPSocket != nil:
		return probeTCP(ctx, p.TCPSocket, podIP, ctr, timeout)
	case p.GRPC != nil:
		return probeGRPC(ctx, p.GRPC, podIP, timeout)
	}
	return errors.New("run probe: no handler")
}

// terminate stops every container of the pod (SIGTERM, grace, SIGKILL),
// then releases the sandbox and removes the pod's directories. A pod that
// vanishes from the API meanwhile is killed at once.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod, grace time.Duration, why string) {
	var running []*instance
	for _, c := range w.all() {
		if c.cur != nil && !c.cur.proc.exited() {
			running = append(running, c.cur)
			w.event(pod, c, corev1.EventTypeNormal, eventKilling, "Stopping container %s", c.spec.Name)
			inst := c.cur
			inst.killing = true
			lc := c.spec.Lifecycle
			if lc == nil || lc.PreStop == nil || grace <= 0 {
				inst.proc.signal(unix.SIGTERM)
				continue
			}
			// The preStop hook runs first, within the grace period.
			h, spec, podIP := lc.PreStop, c.spec, w.podIP()
			w.group.Go(func() error {
				hctx, cancel := context.WithTimeout(w.probeCtx, grace)
				defer cancel()
				if err := w.runHook(hctx, &spec, inst, podIP, h, grace); err != nil && hctx.Err() == nil {
					w.event(pod, c, corev1.EventTypeWarning, eventPreStopHook, "PreStopHook failed: %v", err)
				}
				inst.proc.signal(unix.SIGTERM)
				return nil
			})
		}
	}
	w.log.Info("stopping pod", "why", why, "containers", len(running), "grace", grace)
	alive := func() bool {
		return slices.ContainsFunc(running, func(i *instance) bool { return !i.proc.exited() })
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	killed := false
	for alive() {
		select {
		case <-w.wake:
		case <-w.notify:
			if _, gone := w.snapshot(); gone && !killed {
				deadline.Reset(0)
			}
		case <-deadline.C:
			if killed {
				w.log.Warn("container processes survive SIGKILL")
				running = nil
				continue
			}
			killed = true
			w.log.Info("grace period over, killing pod")
			_ = killCgroup(w.k.podCgroup(pod.UID))
			for _, i := range running {
				i.proc.signal(unix.SIGKILL)
			}
			deadline.Reset(5 * time.Second)
		}
	}
	w.stopProbes()
	w.reap(pod, time.Now())
	// Containers that will not run again: a terminal pod restarts nothing.
	for _, c := range w.all() {
		c.done = true
		if c.status.State.Waiting != nil && c.status.LastTerminationState.Terminated != nil {
			c.status.State = corev1.ContainerState{Terminated: c.status.LastTerminationState.Terminated}
		}
	}
	w.releaseSandbox(ctx, pod)
	if err := os.RemoveAll(w.k.podDir(pod.UID)); err != nil {
		w.log.Warn("remove pod dir", "err", err)
	}
	w.log.Info("pod stopped")
}

// deleteObject writes the pod's terminal status and deletes the object with
// grace 0 and a UID precondition, as kubelet does once a deleted pod's
// containers are gone.
func (w *podWorker) deleteObject(ctx context.Context, pod *corev1.Pod) {
	if ctx.Err() != nil {
		return
	}
	if !w.inherited {
		w.writeStatus(ctx, pod, true)
	}
	err := w.k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: ptr.To(pod.UID)},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.log.Warn("delete pod", "err", err)
		return
	}
	w.log.Info("pod deleted")
}

// containerStatus is c's status with Ready and Started computed.
func (w *podWorker) containerStatus(c *container) corev1.ContainerStatus {
	st := *c.status.DeepCopy()
	st.Ready, st.Started = false, ptr.To(false)
	if inst := c.cur; inst != nil {
		st.Started = ptr.To(inst.startupOK)
		st.Ready = inst.startupOK && inst.ready && !inst.killing
	} else if c.init && !isRestartableInit(&c.spec) {
		st.Ready = st.State.Terminated != nil && st.State.Terminated.ExitCode == 0
	}
	if st.State.Running == nil && st.State.Terminated == nil && st.State.Waiting == nil {
		reason := reasonContainerCreating
		if !c.init && len(w.initCtrs) > 0 {
			reason = reasonPodInitializing
		}
		st.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
	}
	return st
}

func (w *podWorker) statuses() (init, ctrs []corev1.ContainerStatus) {
	for _, c := range w.initCtrs {
		init = append(init, w.containerStatus(c))
	}
	for _, c := range w.ctrs {
		ctrs = append(ctrs, w.containerStatus(c))
	}
	slices.SortFunc(ctrs, func(a, b corev1.ContainerStatus) int { return cmp.Compare(a.Name, b.Name) })
	return init, ctrs
}

// phase is the pod's phase from the containers' current states.
func (w *podWorker) phase(pod *corev1.Pod, terminal bool) corev1.PodPhase {
	init, ctrs := w.statuses()
	return podPhase(&pod.Spec, init, ctrs, terminal)
}

// buildStatus is base with every field kubelet owns set from the worker's
// state; other fields (PodScheduled, qosClass, foreign conditions) are kept.
func (w *podWorker) buildStatus(pod *corev1.Pod, base *corev1.PodStatus, terminal bool) *corev1.PodStatus {
	st := base.DeepCopy()
	st.HostIP = w.k.cfg.NodeIP
	st.HostIPs = []corev1.HostIP{{IP: w.k.cfg.NodeIP}}
	if len(w.podIPs) > 0 {
		st.PodIP = w.podIPs[0]
		st.PodIPs = nil
		for _, ip := range w.podIPs {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
		}
	}
	if st.StartTime == nil {
		st.StartTime = ptr.To(w.startTime)
	}
	st.InitContainerStatuses, st.ContainerStatuses = w.statuses()
	st.Phase = podPhase(&pod.Spec, st.InitContainerStatuses, st.ContainerStatuses, terminal)
	if base.Phase == corev1.PodSucceeded || base.Phase == corev1.PodFailed {
		st.Phase = base.Phase // a terminal phase is final
	}
	conds := podConditions(pod, st.Phase, w.sandboxUp, st.InitContainerStatuses, st.ContainerStatuses)
	st.Conditions = mergeConditions(base.Conditions, conds, now())
	return st
}

// writeStatus updates pods/status when the status changed, retrying on
// conflicts with the latest version of the pod.
func (w *podWorker) writeStatus(ctx context.Context, pod *corev1.Pod, terminal bool) {
	desired := w.buildStatus(pod, &pod.Status, terminal)
	if w.lastSent != nil && statusEqual(desired, w.lastSent) {
		return
	}
	if w.lastSent == nil && statusEqual(desired, &pod.Status) {
		w.lastSent = desired
		return
	}
	base := pod
	for range 5 {
		cp := base.DeepCopy()
		cp.Status = *w.buildStatus(base, &base.Status, terminal)
		_, err := w.k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{FieldManager: "kubelet"})
		switch {
		case err == nil:
			w.lastSent = desired
			if cp.Status.Phase != pod.Status.Phase {
				w.log.Info("pod phase", "phase", cp.Status.Phase)
			}
			return
		case apierrors.IsNotFound(err):
			return
		case apierrors.IsConflict(err):
			latest, gerr := w.k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if gerr != nil {
				w.log.Warn("get pod for status update", "err", gerr)
				return
			}
			if latest.UID != pod.UID {
				return
			}
			base = latest
		default:
			if ctx.Err() == nil {
				w.log.Warn("update pod status", "err", err)
			}
			return
		}
	}
}

// event records an event on the pod or one of its containers.
func (w *podWorker) event(pod *corev1.Pod, c *container, typ, reason, format string, args ...any) {
	ref := &corev1.ObjectReference{
		Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
	}
	if c != nil {
		field := "spec.containers"
		if c.init {
			field = "spec.initContainers"
		}
		ref.FieldPath = fmt.Sprintf("%s{%s}", field, c.spec.Name)
	}
	w.k.recorder.Eventf(ref, typ, reason, format, args...)
}
