package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a running local cluster. Its methods are safe for concurrent use.
type Cluster struct {
	cfg    Config
	run    *run
	addr   addressPlan
	tools  *toolchain
	bin    string // harness binaries (weft-cluster, weft-testapp)
	pki    *pki
	cgroup string // <cgroup2>/weft/<runID>

	// Client is an admin clientset (group system:masters).
	Client kubernetes.Interface
	// RestConfig is the admin REST config behind Client.
	RestConfig *rest.Config

	mu    sync.Mutex // guards the fields below
	procs []*process
	done  bool
}

// Start creates a cluster and returns once every node is Ready and cluster
// DNS answers. On error everything created so far is removed.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("start cluster: must run as root (network namespaces, cgroups, bpffs)")
	}
	began := time.Now()
	repo, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	tools, err := loadToolchain(repo)
	if err != nil {
		return nil, err
	}
	// Tools first: a cold cache builds them here, before any resource exists.
	for _, get := range []func() (string, error){
		tools.etcd, func() (string, error) { return tools.kube("kube-apiserver") }, tools.cniDir, tools.coredns,
	} {
		if _, err := get(); err != nil {
			return nil, err
		}
	}
	bin, err := buildHarnessBinaries(repo)
	if err != nil {
		return nil, err
	}
	if err := ensureBPFFS(); err != nil {
		return nil, err
	}
	cgRoot, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	if err := Reap(cfg.StateRoot); err != nil {
		cfg.Log.Warn("reap stale clusters", "err", err)
	}
	r, err := newRun(cfg.StateRoot, cfg.Name, cfg.Nodes, cfg.CNI)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg: cfg, run: r, addr: addressPlan{slot: r.state.Slot}, tools: tools, bin: bin,
		cgroup: filepath.Join(cgRoot, cgroupParent, r.state.RunID),
	}
	cfg.Log.Info("starting cluster", "run", r.state.RunID, "nodes", cfg.Nodes, "cni", cfg.CNI,
		"underlay", c.addr.underlay(), "dir", r.dir)
	if err := c.start(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return nil, errors.Join(err, c.Stop(stopCtx))
	}
	r.state.Ready = true
	r.state.StartSeconds = time.Since(began).Seconds()
	if err := r.save(); err != nil {
		return nil, err
	}
	cfg.Log.Info("cluster ready", "run", r.state.RunID, "took", time.Since(began).Round(time.Millisecond))
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	step := func(name string, f func() error) error {
		t := time.Now()
		if err := f(); err != nil {
			return err
		}
		c.cfg.Log.Info("step done", "step", name, "took", time.Since(t).Round(time.Millisecond))
		return nil
	}
	if err := step("network", c.setupNetwork); err != nil {
		return err
	}
	if err := step("pki", func() (err error) {
		if c.pki, err = newPKI(c.run.path("pki")); err != nil {
			return err
		}
		return c.writeControlPlanePKI()
	}); err != nil {
		return err
	}
	if err := step("control plane", func() error { return c.startControlPlane(ctx) }); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return fmt.Errorf("load admin kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 100, 200
	c.RestConfig = rc
	if c.Client, err = kubernetes.NewForConfig(rc); err != nil {
		return fmt.Errorf("create admin client: %w", err)
	}
	if c.cfg.controlPlaneOnly {
		return nil
	}
	if err := step("nodes", func() error { return c.startNodes(ctx) }); err != nil {
		return err
	}
	if !c.cfg.SkipDNS {
		if err := step("coredns", func() error { return c.deployDNS(ctx) }); err != nil {
			return err
		}
	}
	return step("ready", func() error { return c.waitReady(ctx) })
}

// spawn starts a component and remembers it for Stop.
func (c *Cluster) spawn(name, netns, cgroupDir string, argv ...string) error {
	p, err := startProcess(c.cfg.Log, name, netns, cgroupDir, c.run.path("logs", name+".log"), nil, argv...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return nil
}

// componentsAlive returns an error naming the first component that exited.
func (c *Cluster) componentsAlive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if ok, err := p.exited(); ok {
			return fmt.Errorf("%s exited (%v); see %s", p.name, err, c.run.path("logs", p.name+".log"))
		}
	}
	return nil
}

// Stop stops every process of the cluster and removes its namespaces,
// cgroups, pin roots and run directory. It is idempotent.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return nil
	}
	c.done = true
	procs := append([]*process(nil), c.procs...)
	c.mu.Unlock()

	// Node emulators first, so they tear their pods down (CNI DEL) cleanly;
	// whatever is left is killed with the run's cgroup.
	var wg sync.WaitGroup
	for _, p := range procs {
		if strings.HasPrefix(p.name, "kubelet-") {
			wg.Go(func() { p.stop(ctx, 5*time.Second) })
		}
	}
	wg.Wait()
	for i := len(procs) - 1; i >= 0; i-- {
		wg.Go(func() { procs[i].stop(ctx, time.Second) })
	}
	wg.Wait()
	err := teardown(c.run.state.RunID)
	if err == nil {
		err = os.RemoveAll(c.run.dir)
	}
	c.run.closeLocks()
	c.cfg.Log.Info("cluster stopped", "run", c.run.state.RunID, "err", err)
	return err
}

// RunID is the cluster's run ID; every host resource it creates carries it.
func (c *Cluster) RunID() string { return c.run.state.RunID }

// Dir is the cluster's run directory (logs, PKI, node roots).
func (c *Cluster) Dir() string { return c.run.dir }

// Kubeconfig is the path of the admin kubeconfig.
func (c *Cluster) Kubeconfig() string { return c.run.path("kubeconfig") }

// AuditLog is the path of the API server's audit log (JSON lines).
func (c *Cluster) AuditLog() string { return c.run.path("logs", "audit.log") }

// Nodes returns the node names, node0 first.
func (c *Cluster) Nodes() []string { return append([]string(nil), c.run.state.Nodes...) }

// NodeNetns is the name of a node's network namespace (under /run/netns).
func (c *Cluster) NodeNetns(node string) string { return netnsName(c.run.state.RunID, node) }

// NodeRoot is a node's host-path root.
func (c *Cluster) NodeRoot(node string) string { return c.run.path("nodes", node) }

// PinRoot is a node's bpffs pin root.
func (c *Cluster) PinRoot(node string) string { return pinRoot(c.run.state.RunID, node) }

// NodeIP is a node's underlay address.
func (c *Cluster) NodeIP(node string) string {
	for i, n := range c.run.state.Nodes {
		if n == node {
			return c.addr.node(i).String()
		}
	}
	return ""
}

// BinDir holds the harness binaries (weft-testapp, weft-cluster).
func (c *Cluster) BinDir() string { return c.bin }

// CgroupDir is the cgroup v2 directory holding every process of the
// cluster (what weft's agent attaches to in tests, instead of the root).
func (c *Cluster) CgroupDir() string { return c.cgroup }

// Helm is the path of the cached helm binary.
func (c *Cluster) Helm() (string, error) { return c.tools.path("helm", "HELM_VERSION", "helm", "helm") }

// Kubectl is the path of the kubectl built with the cluster's Kubernetes.
func (c *Cluster) Kubectl() (string, error) { return c.tools.kube("kubectl") }
