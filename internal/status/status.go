package status

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/internal/stat"
)

// Names and ports of weft's components, as the chart installs them.
const (
	OperatorName    = "weft-operator"
	AgentSelector   = "app.kubernetes.io/name=weft-agent"
	ZtunnelSelector = "app.kubernetes.io/name=weft-ztunnel"
	OperatorLabel   = "app.kubernetes.io/name=weft-operator"
	OperatorPort    = 15014 // /readyz
	AgentPort       = 15021 // /healthz
	ZtunnelPort     = 15020 // /healthz/ready, /metrics

	// MeshLabel=MeshEnabled on a namespace enrolls its pods;
	// MeshLabel=MeshDisabled on a pod opts it out.
	MeshLabel    = "weft.io/mesh"
	MeshEnabled  = "enabled"
	MeshDisabled = "disabled"

	certExpiryMetric = "weft_ztunnel_cert_expiry_timestamp_seconds"
	configMetric     = "weft_ztunnel_config_info"
)

// Options configure Check.
type Options struct {
	Kube kubernetes.Interface
	// Namespace is weft's install namespace (default weft-system).
	Namespace string
	// HTTP reaches the components' endpoints (default: 3 s timeout).
	HTTP *http.Client
	// Ports of the components' endpoints (default OperatorPort, AgentPort,
	// ZtunnelPort).
	OperatorPort, AgentPort, ZtunnelPort int
	// Now is for tests (default time.Now).
	Now func() time.Time
}

// Probe is one health check's outcome.
type Probe struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Operator is the control plane's state.
type Operator struct {
	Installed bool   `json:"installed"`
	Ready     Probe  `json:"ready"`  // the Deployment's replicas
	Readyz    *Probe `json:"readyz"` // nil when no pod IP answered at all
}

// Node is one node's data plane.
type Node struct {
	Name          string     `json:"name"`
	IP            string     `json:"ip"`
	Agent         Probe      `json:"agent"`
	AgentHealth   Probe      `json:"agentHealth"`
	Ztunnel       Probe      `json:"ztunnel"`
	ZtunnelReady  Probe      `json:"ztunnelReady"`
	EnrolledPods  int        `json:"enrolledPods"`
	CertExpiry    *time.Time `json:"certExpiry"`    // nil: unknown
	ConfigVersion string     `json:"configVersion"` // "": unknown
}

// Report is the whole installation's state.
type Report struct {
	Namespace string    `json:"namespace"`
	Operator  Operator  `json:"operator"`
	Nodes     []Node    `json:"nodes"`
	Versions  []string  `json:"configVersions"` // distinct, sorted
	Problems  []string  `json:"problems"`
	Healthy   bool      `json:"healthy"`
	Time      time.Time `json:"time"`
}

// Check gathers the report. It fails only when the API server cannot be
// read; unhealthy components are in the report.
func Check(ctx context.Context, opts Options) (*Report, error) {
	if opts.Namespace == "" {
		opts.Namespace = "weft-system"
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Timeout: 3 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.OperatorPort = cmp.Or(opts.OperatorPort, OperatorPort)
	opts.AgentPort = cmp.Or(opts.AgentPort, AgentPort)
	opts.ZtunnelPort = cmp.Or(opts.ZtunnelPort, ZtunnelPort)
	kube, ns := opts.Kube, opts.Namespace
	r := &Report{Namespace: ns, Time: opts.Now().UTC(), Problems: []string{}}

	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	agents, err := podsByNode(ctx, kube, ns, AgentSelector)
	if err != nil {
		return nil, err
	}
	ztunnels, err := podsByNode(ctx, kube, ns, ZtunnelSelector)
	if err != nil {
		return nil, err
	}
	enrolled, err := enrolledByNode(ctx, kube)
	if err != nil {
		return nil, err
	}

	if err := r.checkOperator(ctx, opts); err != nil {
		return nil, err
	}

	items := nodes.Items
	slices.SortFunc(items, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	r.Nodes = make([]Node, len(items))
	var wg sync.WaitGroup
	for i := range items {
		n := &items[i]
		r.Nodes[i] = Node{Name: n.Name, IP: stat.NodeIP(n), EnrolledPods: enrolled[n.Name]}
		wg.Go(func() { checkNode(ctx, opts, &r.Nodes[i], agents[n.Name], ztunnels[n.Name]) })
	}
	wg.Wait()

	now := opts.Now()
	versions := map[string][]string{}
	for _, n := range r.Nodes {
		for what, p := range map[string]Probe{"agent pod": n.Agent, "agent health": n.AgentHealth, "ztunnel pod": n.Ztunnel, "ztunnel readiness": n.ZtunnelReady} {
			if !p.OK {
				r.problem("node %s: %s: %s", n.Name, what, p.Detail)
			}
		}
		if n.CertExpiry != nil && !n.CertExpiry.After(now) {
			r.problem("node %s: ztunnel certificate expired at %s", n.Name, n.CertExpiry.UTC().Format(time.RFC3339))
		}
		if n.ConfigVersion != "" {
			versions[n.ConfigVersion] = append(versions[n.ConfigVersion], n.Name)
		}
	}
	for v := range versions {
		r.Versions = append(r.Versions, v)
	}
	slices.Sort(r.Versions)
	if len(r.Versions) > 1 {
		var parts []string
		for _, v := range r.Versions {
			parts = append(parts, fmt.Sprintf("%s on %s", v, strings.Join(versions[v], ", ")))
		}
		r.problem("config version skew: %s", strings.Join(parts, "; "))
	}
	if len(r.Nodes) == 0 {
		r.problem("no nodes")
	}
	slices.Sort(r.Problems)
	r.Healthy = len(r.Problems) == 0
	return r, nil
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

func (r *Report) checkOperator(ctx context.Context, opts Options) error {
	d, err := opts.Kube.AppsV1().Deployments(opts.Namespace).Get(ctx, OperatorName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// operator.enabled=false is a supported (test) mode.
		r.Operator.Ready = Probe{OK: true, Detail: "not installed"}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get deployment %s/%s: %w", opts.Namespace, OperatorName, err)
	}
	r.Operator.Installed = true
	r.Operator.Ready = deploymentReady(d)
	if !r.Operator.Ready.OK {
		r.problem("operator: %s", r.Operator.Ready.Detail)
	}
	pods, err := opts.Kube.CoreV1().Pods(opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: OperatorLabel})
	if err != nil {
		return fmt.Errorf("list operator pods: %w", err)
	}
	// The Deployment's readiness is the operator's /readyz as its kubelet
	// probes it. The CLI asks /readyz itself only through the API server's
	// pod proxy, never at the pod IP: pod IPs need not be routable from where
	// the CLI runs, and another host may answer there. What the proxy says
	// is shown, and counts only when the operator itself answered.
	for _, p := range sortedPods(pods.Items) {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		body, err := opts.Kube.CoreV1().Pods(opts.Namespace).ProxyGet("http", p.Name, strconv.Itoa(opts.OperatorPort), "/readyz", nil).DoRaw(ctx)
		if err != nil {
			continue // not reachable through the API server (or not ready: the Deployment says)
		}
		pr := Probe{OK: true, Detail: p.Name + ": " + strings.TrimSpace(string(body))}
		r.Operator.Readyz = &pr
		break
	}
	return nil
}

func deploymentReady(d *appsv1.Deployment) Probe {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	detail := fmt.Sprintf("%d/%d replicas ready", d.Status.ReadyReplicas, want)
	return Probe{OK: want > 0 && d.Status.ReadyReplicas >= want && d.Status.AvailableReplicas >= 1, Detail: detail}
}

func checkNode(ctx context.Context, opts Options, n *Node, agent, ztunnel *corev1.Pod) {
	n.Agent = podReady(agent, "weft-agent")
	n.Ztunnel = podReady(ztunnel, "weft-ztunnel")
	if n.IP == "" {
		n.AgentHealth = Probe{Detail: "node has no InternalIP"}
		n.ZtunnelReady = n.AgentHealth
		return
	}
	base := func(port int) string { return "http://" + net.JoinHostPort(n.IP, strconv.Itoa(port)) }
	if agent == nil {
		n.AgentHealth = Probe{Detail: "no agent"}
	} else {
		n.AgentHealth, _ = get(ctx, opts.HTTP, base(opts.AgentPort)+"/healthz")
	}
	if ztunnel == nil {
		n.ZtunnelReady = Probe{Detail: "no ztunnel"}
		return
	}
	n.ZtunnelReady, _ = get(ctx, opts.HTTP, base(opts.ZtunnelPort)+"/healthz/ready")
	mf, err := stat.Scrape(ctx, opts.HTTP, base(opts.ZtunnelPort)+"/metrics")
	if err != nil {
		return // expiry and version stay unknown
	}
	if fam := mf[certExpiryMetric]; fam != nil {
		earliest := math.Inf(1)
		for _, m := range fam.GetMetric() {
			if v := stat.Value(m); v > 0 {
				earliest = math.Min(earliest, v)
			}
		}
		if !math.IsInf(earliest, 1) {
			t := time.Unix(0, int64(earliest*1e9)).UTC()
			n.CertExpiry = &t
		}
	}
	if fam := mf[configMetric]; fam != nil {
		for _, m := range fam.GetMetric() {
			if stat.Value(m) == 1 {
				n.ConfigVersion = stat.Label(m, "version")
			}
		}
	}
}

// get probes url: OK on 200. reached is false when nothing answered.
func get(ctx context.Context, client *http.Client, url string) (p Probe, reached bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Probe{Detail: err.Error()}, false
	}
	resp, err := client.Do(req)
	if err != nil {
		var uerr interface{ Unwrap() error }
		if errors.As(err, &uerr) {
			err = uerr.Unwrap()
		}
		return Probe{Detail: "GET " + url + ": " + err.Error()}, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		if msg != "" {
			msg = ": " + msg
		}
		return Probe{Detail: "GET " + url + ": " + resp.Status + msg}, true
	}
	return Probe{OK: true, Detail: "ok"}, true
}

func podReady(p *corev1.Pod, what string) Probe {
	if p == nil {
		return Probe{Detail: "no " + what + " pod"}
	}
	if p.DeletionTimestamp != nil {
		return Probe{Detail: p.Name + " terminating"}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return Probe{OK: true, Detail: p.Name + " ready"}
			}
			msg := c.Message
			if msg == "" {
				msg = c.Reason
			}
			if msg != "" {
				msg = " (" + msg + ")"
			}
			return Probe{Detail: p.Name + " not ready" + msg}
		}
	}
	return Probe{Detail: fmt.Sprintf("%s not ready (phase %s)", p.Name, p.Status.Phase)}
}

// podsByNode are the pods of selector in ns by node; of several on one
// node (a rollout), a ready one.
func podsByNode(ctx context.Context, kube kubernetes.Interface, ns, selector string) (map[string]*corev1.Pod, error) {
	list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("list pods %s in namespace %s: %w", selector, ns, err)
	}
	out := map[string]*corev1.Pod{}
	for _, p := range sortedPods(list.Items) {
		if p.Spec.NodeName == "" {
			continue
		}
		if prev := out[p.Spec.NodeName]; prev == nil || !podReady(prev, "").OK && podReady(p, "").OK {
			out[p.Spec.NodeName] = p
		}
	}
	return out, nil
}

func sortedPods(pods []corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, len(pods))
	for i := range pods {
		out[i] = &pods[i]
	}
	slices.SortFunc(out, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// enrolledByNode counts the Running pods of enrolled namespaces on each
// node, as the agent's enrollment policy decides: not host-network, not
// opted out.
func enrolledByNode(ctx context.Context, kube kubernetes.Interface) (map[string]int, error) {
	nss, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: MeshLabel + "=" + MeshEnabled})
	if err != nil {
		return nil, fmt.Errorf("list enrolled namespaces: %w", err)
	}
	out := map[string]int{}
	for _, ns := range nss.Items {
		pods, err := kube.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{FieldSelector: "status.phase=Running"})
		if err != nil {
			return nil, fmt.Errorf("list pods in namespace %s: %w", ns.Name, err)
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.Spec.HostNetwork || p.Labels[MeshLabel] == MeshDisabled || p.Spec.NodeName == "" {
				continue
			}
			out[p.Spec.NodeName]++
		}
	}
	return out, nil
}

// WriteText prints r as a table and a verdict.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	op := "not installed"
	if r.Operator.Installed {
		op = status(r.Operator.Ready)
		if r.Operator.Readyz != nil {
			op += ", /readyz " + status(*r.Operator.Readyz)
		} else {
			op += ", /readyz unreachable from here"
		}
	}
	fmt.Fprintf(&b, "Operator: %s\n\n", op)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tAGENT\tAGENT HEALTH\tZTUNNEL\tZTUNNEL READY\tENROLLED PODS\tCERT EXPIRES\tCONFIG VERSION")
	for _, n := range r.Nodes {
		exp := "unknown"
		if n.CertExpiry != nil {
			exp = n.CertExpiry.UTC().Format(time.RFC3339)
		}
		ver := n.ConfigVersion
		if ver == "" {
			ver = "unknown"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Name,
			okWord(n.Agent, "ready", "NOT READY"), okWord(n.AgentHealth, "ok", "FAILING"),
			okWord(n.Ztunnel, "ready", "NOT READY"), okWord(n.ZtunnelReady, "ok", "FAILING"),
			n.EnrolledPods, exp, ver)
	}
	tw.Flush()
	switch len(r.Versions) {
	case 0:
		b.WriteString("\nConfig version: unknown\n")
	case 1:
		fmt.Fprintf(&b, "\nConfig version: %s on every node that reports one\n", r.Versions[0])
	default:
		fmt.Fprintf(&b, "\nConfig version: SKEW (%s)\n", strings.Join(r.Versions, ", "))
	}
	if r.Healthy {
		b.WriteString("\nHealthy.\n")
	} else {
		fmt.Fprintf(&b, "\nUnhealthy (%d):\n", len(r.Problems))
		for _, p := range r.Problems {
			b.WriteString("  - " + p + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func status(p Probe) string {
	if p.OK {
		return p.Detail
	}
	return "NOT READY: " + p.Detail
}

func okWord(p Probe, ok, bad string) string {
	if p.OK {
		return ok
	}
	return bad
}

// WriteJSON prints r as one JSON document.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
