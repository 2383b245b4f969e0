package cniplugin

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// Kube reads what the enrollment decision needs from the API server.
type Kube interface {
	Namespace(ctx context.Context, name string) (*corev1.Namespace, error)
	Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// apiKube is Kube over the API server. It is safe for concurrent use.
type apiKube struct {
	client corev1client.CoreV1Interface
}

// newAPIKube returns a Kube for the API server of kubeconfig.
func newAPIKube(kubeconfig string, timeout time.Duration) (*apiKube, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	rc.UserAgent = "weft-cni"
	rc.Timeout = timeout
	// JSON: one short-lived process makes two GETs; nothing to gain from
	// protobuf, and it keeps what the plugin sends inspectable.
	rc.ContentType = "application/json"
	rc.AcceptContentTypes = "application/json"
	c, err := corev1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create api client for %s: %w", kubeconfig, err)
	}
	return &apiKube{client: c}, nil
}

func (k *apiKube) Namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns, err := k.client.Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	return ns, nil
}

func (k *apiKube) Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	p, err := k.client.Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return p, nil
}
