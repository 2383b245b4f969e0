package main

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeFlags are the API server flags of the commands that read the
// cluster.
type kubeFlags struct {
	kubeconfig string
	context    string
	weftNS     string
}

func (k *kubeFlags) register(f *pflag.FlagSet) {
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
	f.StringVar(&k.context, "context", "", "kubeconfig context (default: the current context)")
	f.StringVarP(&k.weftNS, "weft-namespace", "n", "weft-system", "namespace weft is installed in")
}

func (k *kubeFlags) clientConfig() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context})
}

// client connects to the API server; it also returns the REST config (its
// credentials) and the context's default namespace.
func (k *kubeFlags) client() (kubernetes.Interface, *rest.Config, string, error) {
	cc := k.clientConfig()
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, nil, "", fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.UserAgent = "weft-cli/" + version
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, "", fmt.Errorf("create API client for %s: %w", cfg.Host, err)
	}
	return kube, cfg, ns, nil
}
