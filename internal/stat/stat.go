package stat

import (
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

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Resource kinds `weft stat` takes.
const (
	KindDeployment = "deployment"
	KindPod        = "pod"
	KindNamespace  = "namespace"
)

var kindAliases = map[string]string{
	"deployment": KindDeployment, "deployments": KindDeployment, "deploy": KindDeployment,
	"pod": KindPod, "pods": KindPod, "po": KindPod,
	"namespace": KindNamespace, "namespaces": KindNamespace, "ns": KindNamespace,
}

// Target is what to show: a deployment or pod (in Namespace), or a whole
// namespace (Name).
type Target struct {
	Kind      string
	Namespace string // of a deployment or pod
	Name      string
}

func (t Target) String() string {
	if t.Kind == KindNamespace {
		return "namespace/" + t.Name
	}
	return t.Kind + "/" + t.Namespace + "/" + t.Name
}

// ParseTarget parses "[ns/]deployment/NAME", "[ns/]pod/NAME" or
// "namespace/NAME" (kinds may be abbreviated: deploy, po, ns); a deployment
// or pod without a namespace is in defaultNS.
func ParseTarget(arg, defaultNS string) (Target, error) {
	parts := strings.Split(arg, "/")
	bad := fmt.Errorf("invalid resource %q: want [namespace/]deployment/NAME, [namespace/]pod/NAME or namespace/NAME", arg)
	for _, p := range parts {
		if p == "" {
			return Target{}, bad
		}
	}
	var ns string
	switch len(parts) {
	case 2:
		ns = defaultNS
	case 3:
		ns, parts = parts[0], parts[1:]
	default:
		return Target{}, bad
	}
	kind, ok := kindAliases[strings.ToLower(parts[0])]
	if !ok {
		return Target{}, bad
	}
	if kind == KindNamespace {
		if len(strings.Split(arg, "/")) == 3 {
			return Target{}, bad
		}
		return Target{Kind: kind, Name: parts[1]}, nil
	}
	return Target{Kind: kind, Namespace: ns, Name: parts[1]}, nil
}

// Options configure Run.
type Options struct {
	Kube kubernetes.Interface
	// WeftNamespace is where weft's ztunnels run (default weft-system).
	WeftNamespace string
	// Window between the two scrapes (default 10s).
	Window time.Duration
	// HTTP scrapes the nodes (default: a client with a 5 s timeout).
	HTTP *http.Client
	// MetricsPort of ztunnel on each node (default 15020).
	MetricsPort int
	// Warn reports a node that could not be scraped (may be nil).
	Warn func(error)
	// Now and Sleep are for tests (default time.Now and a ctx-aware
	// sleep).
	Now   func() time.Time
	Sleep func(context.Context, time.Duration) error
}

// ZtunnelSelector selects weft's node proxies.
const ZtunnelSelector = "app.kubernetes.io/name=weft-ztunnel"

// Endpoint is one node's metrics URL.
type Endpoint struct {
	Node string
	URL  string
}

// Endpoints are the metrics URLs of every node running a weft ztunnel,
// sorted by node.
func Endpoints(ctx context.Context, kube kubernetes.Interface, weftNS string, port int) ([]Endpoint, error) {
	if weftNS == "" {
		weftNS = "weft-system"
	}
	if port == 0 {
		port = 15020
	}
	pods, err := kube.CoreV1().Pods(weftNS).List(ctx, metav1.ListOptions{LabelSelector: ZtunnelSelector})
	if err != nil {
		return nil, fmt.Errorf("list ztunnels in namespace %s: %w", weftNS, err)
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	ips := map[string]string{}
	for i := range nodes.Items {
		ips[nodes.Items[i].Name] = NodeIP(&nodes.Items[i])
	}
	seen := map[string]bool{}
	var eps []Endpoint
	for _, p := range pods.Items {
		n := p.Spec.NodeName
		if n == "" || seen[n] {
			continue
		}
		ip := ips[n]
		if ip == "" {
			ip = p.Status.HostIP
		}
		if ip == "" {
			continue
		}
		seen[n] = true
		eps = append(eps, Endpoint{Node: n, URL: "http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + "/metrics"})
	}
	slices.SortFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.Node, b.Node) })
	if len(eps) == 0 {
		return nil, fmt.Errorf("no weft-ztunnel pod (label %s) in namespace %s", ZtunnelSelector, weftNS)
	}
	return eps, nil
}

// NodeIP is a node's first InternalIP (IPv4 preferred), "" when none.
func NodeIP(n *corev1.Node) string {
	var other string
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if !strings.Contains(a.Address, ":") {
			return a.Address
		}
		if other == "" {
			other = a.Address
		}
	}
	return other
}

// Result is what Run measured.
type Result struct {
	Target Target
	Window time.Duration // measured between the two scrapes
	Nodes  int           // scraped both times
	Rows   []Row
}

// Run resolves t, scrapes every node twice a window apart and returns t's
// rows: for a deployment or pod its workload's inbound and outbound rows
// (zero when there was no traffic); for a namespace every workload of it
// that had traffic.
func Run(ctx context.Context, opts Options, t Target) (*Result, error) {
	if opts.Window <= 0 {
		opts.Window = 10 * time.Second
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Timeout: 5 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	if opts.Warn == nil {
		opts.Warn = func(error) {}
	}
	ns, workload, err := resolve(ctx, opts.Kube, t)
	if err != nil {
		return nil, err
	}
	eps, err := Endpoints(ctx, opts.Kube, opts.WeftNamespace, opts.MetricsPort)
	if err != nil {
		return nil, err
	}
	start := opts.Now()
	first := scrapeAll(ctx, opts.HTTP, eps)
	if err := opts.Sleep(ctx, opts.Window-opts.Now().Sub(start)); err != nil {
		return nil, err
	}
	end := opts.Now()
	second := scrapeAll(ctx, opts.HTTP, eps)
	before, after := Snapshot{}, Snapshot{}
	nodes := 0
	var errs []error
	for i, ep := range eps {
		switch {
		case first[i].err != nil:
			errs = append(errs, fmt.Errorf("node %s: %w", ep.Node, first[i].err))
		case second[i].err != nil:
			errs = append(errs, fmt.Errorf("node %s: %w", ep.Node, second[i].err))
		default:
			before.Add(first[i].mf)
			after.Add(second[i].mf)
			nodes++
			continue
		}
		opts.Warn(errs[len(errs)-1])
	}
	if nodes == 0 {
		return nil, fmt.Errorf("scrape node proxies: %w", errors.Join(errs...))
	}
	window := end.Sub(start)
	var rows []Row
	for _, r := range Compute(before, after, window.Seconds()) {
		if r.Namespace == ns && (workload == "" || r.Workload == workload) {
			rows = append(rows, r)
		}
	}
	if workload != "" {
		for _, dir := range []Direction{Inbound, Outbound} {
			if !slices.ContainsFunc(rows, func(r Row) bool { return r.Direction == dir }) {
				rows = append(rows, Row{Key: Key{ns, workload, dir}, FailedShare: math.NaN()})
			}
		}
		slices.SortFunc(rows, func(a, b Row) int { return strings.Compare(string(a.Direction), string(b.Direction)) })
	}
	return &Result{Target: t, Window: window, Nodes: nodes, Rows: rows}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type scraped struct {
	mf  Families
	err error
}

func scrapeAll(ctx context.Context, client *http.Client, eps []Endpoint) []scraped {
	out := make([]scraped, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			mf, err := Scrape(ctx, client, ep.URL)
			out[i] = scraped{mf, err}
		})
	}
	wg.Wait()
	return out
}

// resolve finds t's namespace and Istio workload name ("" for a whole
// namespace).
func resolve(ctx context.Context, kube kubernetes.Interface, t Target) (ns, workload string, err error) {
	switch t.Kind {
	case KindNamespace:
		if _, err := kube.CoreV1().Namespaces().Get(ctx, t.Name, metav1.GetOptions{}); err != nil {
			return "", "", notFound(err, t)
		}
		return t.Name, "", nil
	case KindDeployment:
		if _, err := kube.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{}); err != nil {
			return "", "", notFound(err, t)
		}
		return t.Namespace, t.Name, nil
	case KindPod:
		p, err := kube.CoreV1().Pods(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		if err != nil {
			return "", "", notFound(err, t)
		}
		return t.Namespace, WorkloadName(ctx, kube, p), nil
	}
	return "", "", fmt.Errorf("unknown kind %q", t.Kind)
}

func notFound(err error, t Target) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s not found", t)
	}
	return fmt.Errorf("get %s: %w", t, err)
}

// WorkloadName is Istio's workload name of a pod, as weft's node proxy
// labels its metrics: its Deployment (through its ReplicaSet), else its
// controller, else the pod itself.
func WorkloadName(ctx context.Context, kube kubernetes.Interface, p *corev1.Pod) string {
	ref := metav1.GetControllerOfNoCopy(p)
	if ref == nil {
		return p.Name
	}
	if ref.Kind != "ReplicaSet" {
		return ref.Name
	}
	if rs, err := kube.AppsV1().ReplicaSets(p.Namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
		if d := metav1.GetControllerOfNoCopy(rs); d != nil && d.Kind == "Deployment" {
			return d.Name
		}
		return ref.Name
	}
	if h := p.Labels["pod-template-hash"]; h != "" {
		if d, ok := strings.CutSuffix(ref.Name, "-"+h); ok && d != "" {
			return d
		}
	}
	return ref.Name
}

// WriteTable prints r like `linkerd viz stat`.
func WriteTable(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tWORKLOAD\tDIRECTION\tCONN/S\tACTIVE\tBYTES_IN/S\tBYTES_OUT/S\tREFUSED/RESET\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99")
	for _, row := range r.Rows {
		success, rps, p50, p95, p99 := "-", "-", "-", "-", "-"
		if h := row.HTTP; h != nil {
			success, rps = percent(h.Success), formatRate(h.RPS)
			p50, p95, p99 = ms(h.P50), ms(h.P95), ms(h.P99)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			row.Namespace, row.Workload, row.Direction, formatRate(row.ConnsPerSec), strconv.FormatFloat(row.Active, 'f', 0, 64),
			formatRate(row.BytesInPerSec), formatRate(row.BytesOutPerSec), percent(row.FailedShare),
			success, rps, p50, p95, p99)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Rows) == 0 {
		_, err := fmt.Fprintf(w, "no meshed traffic in %s in the last %s\n", r.Target, r.Window.Round(time.Second))
		return err
	}
	return nil
}

// WriteJSON prints r as one JSON document (an unknown share or latency is
// null).
func WriteJSON(w io.Writer, r *Result) error {
	type httpOut struct {
		RPS     float64  `json:"requestsPerSecond"`
		Success *float64 `json:"successRate"`
		P50     *float64 `json:"latencyP50Ms"`
		P95     *float64 `json:"latencyP95Ms"`
		P99     *float64 `json:"latencyP99Ms"`
	}
	type row struct {
		Namespace      string   `json:"namespace"`
		Workload       string   `json:"workload"`
		Direction      string   `json:"direction"`
		ConnsPerSec    float64  `json:"connectionsOpenedPerSecond"`
		Active         float64  `json:"activeConnections"`
		BytesInPerSec  float64  `json:"bytesInPerSecond"`
		BytesOutPerSec float64  `json:"bytesOutPerSecond"`
		FailedShare    *float64 `json:"refusedOrResetShare"`
		HTTP           *httpOut `json:"http,omitempty"`
	}
	out := struct {
		Target        string  `json:"target"`
		WindowSeconds float64 `json:"windowSeconds"`
		Nodes         int     `json:"nodes"`
		Rows          []row   `json:"rows"`
	}{Target: r.Target.String(), WindowSeconds: r.Window.Seconds(), Nodes: r.Nodes, Rows: []row{}}
	for _, x := range r.Rows {
		o := row{
			Namespace: x.Namespace, Workload: x.Workload, Direction: string(x.Direction),
			ConnsPerSec: x.ConnsPerSec, Active: x.Active, BytesInPerSec: x.BytesInPerSec, BytesOutPerSec: x.BytesOutPerSec,
			FailedShare: num(x.FailedShare),
		}
		if h := x.HTTP; h != nil {
			o.HTTP = &httpOut{RPS: h.RPS, Success: num(h.Success), P50: num(h.P50), P95: num(h.P95), P99: num(h.P99)}
		}
		out.Rows = append(out.Rows, o)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func num(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

func percent(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(100*v, 'f', 2, 64) + "%"
}

func ms(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
}
