package observe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Where weft's agents and their flow API are.
const (
	DefaultNamespace = "weft-system"
	AgentSelector    = "app.kubernetes.io/name=weft-agent"
	CertAnnotation   = "weft.io/flows-cert"
	FlowsPort        = 4244
	DefaultSocket    = "unix:///var/run/weft/hubble.sock"
)

// Discovery finds nodes' flow APIs through the API server.
type Discovery struct {
	Kube kubernetes.Interface
	// Namespace is weft's install namespace (default weft-system).
	Namespace string
	// Token authenticates to every node.
	Token string
}

// Targets returns the flow API of node (every node that runs a weft agent
// when node is ""), sorted by node name. Nodes without an agent pod are
// skipped when listing all nodes; skipped lists them with why.
func (d Discovery) Targets(ctx context.Context, node string) (targets []Target, skipped []error, err error) {
	ns := d.namespace()
	var nodes []corev1.Node
	if node != "" {
		n, err := d.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("node %q not found", node)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("get node %s: %w", node, err)
		}
		nodes = []corev1.Node{*n}
	} else {
		list, err := d.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("list nodes: %w", err)
		}
		nodes = list.Items
	}
	pods, err := d.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: AgentSelector})
	if err != nil {
		return nil, nil, fmt.Errorf("list weft agents in namespace %s: %w", ns, err)
	}
	agents := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil && agents[p.Spec.NodeName] != nil {
			continue
		}
		agents[p.Spec.NodeName] = p
	}
	slices.SortFunc(nodes, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	for i := range nodes {
		t, err := d.target(&nodes[i], agents[nodes[i].Name])
		if err != nil {
			if node != "" {
				return nil, nil, err
			}
			skipped = append(skipped, err)
			continue
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 && len(skipped) > 0 {
		return nil, skipped, fmt.Errorf("no node's flow API is reachable: %w", errors.Join(skipped...))
	}
	return targets, skipped, nil
}

// TargetAt is the flow API at addr (host:port): the node whose address is
// host, with its agent's certificate.
func (d Discovery) TargetAt(ctx context.Context, addr string) (Target, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return Target{}, fmt.Errorf("invalid --server %q: want unix:///path or host:port", addr)
	}
	list, err := d.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return Target{}, fmt.Errorf("list nodes: %w", err)
	}
	for i := range list.Items {
		n := &list.Items[i]
		for _, a := range n.Status.Addresses {
			if a.Address == host || n.Name == host {
				t, err := d.targetNode(ctx, n)
				if err != nil {
					return Target{}, err
				}
				t.Address = addr
				return t, nil
			}
		}
	}
	return Target{}, fmt.Errorf("no node has the address %s (the TLS certificate to pin is found through its node)", host)
}

func (d Discovery) namespace() string {
	if d.Namespace == "" {
		return DefaultNamespace
	}
	return d.Namespace
}

func (d Discovery) targetNode(ctx context.Context, n *corev1.Node) (Target, error) {
	pods, err := d.Kube.CoreV1().Pods(d.namespace()).List(ctx, metav1.ListOptions{
		LabelSelector: AgentSelector, FieldSelector: "spec.nodeName=" + n.Name,
	})
	if err != nil {
		return Target{}, fmt.Errorf("list weft agent of node %s: %w", n.Name, err)
	}
	var agent *corev1.Pod
	if len(pods.Items) > 0 {
		agent = &pods.Items[0]
	}
	return d.target(n, agent)
}

func (d Discovery) target(n *corev1.Node, agent *corev1.Pod) (Target, error) {
	if agent == nil {
		return Target{}, fmt.Errorf("node %s: no weft-agent pod (label %s) in namespace %s", n.Name, AgentSelector, d.namespace())
	}
	ip := NodeIP(n)
	if ip == "" {
		ip = agent.Status.HostIP
	}
	if ip == "" {
		return Target{}, fmt.Errorf("node %s has no InternalIP", n.Name)
	}
	cert := agent.Annotations[CertAnnotation]
	if cert == "" {
		return Target{}, fmt.Errorf("node %s: agent pod %s/%s has no %s annotation (agent not started yet, or too old to serve flows)",
			n.Name, agent.Namespace, agent.Name, CertAnnotation)
	}
	return Target{
		Node:    n.Name,
		Address: net.JoinHostPort(ip, strconv.Itoa(FlowsPort)),
		CertPEM: []byte(cert),
		Token:   d.Token,
	}, nil
}

// NodeIP is a node's first InternalIP (IPv4 preferred), "" when it has
// none.
func NodeIP(n *corev1.Node) string {
	var v6 string
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if ip.Is4() {
			return a.Address
		}
		if v6 == "" {
			v6 = a.Address
		}
	}
	return v6
}

// Token is the bearer token for nodes' flow APIs: token, else the contents
// of tokenFile, else the kubeconfig's token (cfg may be nil). It returns ""
// when there is none (the unix socket needs none).
func Token(cfg *rest.Config, token, tokenFile string) (string, error) {
	if token != "" {
		return token, nil
	}
	if tokenFile == "" && cfg != nil {
		if cfg.BearerToken != "" {
			return cfg.BearerToken, nil
		}
		tokenFile = cfg.BearerTokenFile
	}
	if tokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("read token: %s is empty", tokenFile)
	}
	return t, nil
}
