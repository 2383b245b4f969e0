package preflight

import (
	"context"
	"errors"
	"fmt"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubePolicySource reads from an API server with the typed clients (not the
// whole clientset: the CLI stays small).
type kubePolicySource struct {
	server string
	core   corev1client.CoreV1Interface
	net    networkingv1client.NetworkingV1Interface
}

// newKubePolicySource connects with the kubeconfig at path, or in-cluster
// when path is empty; it returns nil, nil when there is no cluster access.
func newKubePolicySource(path string, opts Options) (PolicySource, error) {
	var cfg *rest.Config
	var err error
	if path != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("load in-cluster config: %w", err)
		}
	}
	cfg.Timeout = opts.APITimeout
	cfg.UserAgent = "weft-check"
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("create API client for %s: %w", cfg.Host, err)
	}
	core, err := corev1client.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("create core client for %s: %w", cfg.Host, err)
	}
	nc, err := networkingv1client.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("create networking client for %s: %w", cfg.Host, err)
	}
	return &kubePolicySource{server: cfg.Host, core: core, net: nc}, nil
}

func (k *kubePolicySource) Server() string { return k.server }

func (k *kubePolicySource) EnrolledNamespaces(ctx context.Context) ([]string, error) {
	list, err := k.core.Namespaces().List(ctx, metav1.ListOptions{LabelSelector: meshLabel + "=" + meshEnabled})
	if err != nil {
		return nil, fmt.Errorf("list enrolled namespaces: %w", err)
	}
	names := make([]string, 0, len(list.Items))
	for _, ns := range list.Items {
		names = append(names, ns.Name)
	}
	return names, nil
}

func (k *kubePolicySource) NetworkPolicies(ctx context.Context, namespace string) ([]networkingv1.NetworkPolicy, error) {
	list, err := k.net.NetworkPolicies(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list networkpolicies in %s: %w", namespace, err)
	}
	return list.Items, nil
}

func checkNetworkPoliciesHost(ctx context.Context, opts Options) Result {
	src, err := newKubePolicySource(opts.Kubeconfig, opts)
	if err != nil {
		return Result{Name: "networkpolicy", Status: StatusWarn, Detail: oneLine(err.Error()),
			Hint: "fix --kubeconfig to check NetworkPolicies of enrolled namespaces"}
	}
	return checkNetworkPolicies(ctx, src) // nil src: no cluster access
}
