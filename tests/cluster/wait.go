package cluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Poll calls cond every interval until it returns true, it returns an error,
// or timeout passes; the error then names what was awaited and the last
// reason cond gave.
func Poll(ctx context.Context, timeout, interval time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		ok, why, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %s)", what, ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}

func (c *Cluster) waitReady(ctx context.Context) error {
	alive := func() error { return c.componentsAlive() }
	if err := Poll(ctx, 90*time.Second, 100*time.Millisecond, "nodes Ready", func(ctx context.Context) (bool, string, error) {
		if err := alive(); err != nil {
			return false, "", err
		}
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		ready := 0
		for _, n := range nodes.Items {
			if nodeReady(&n) {
				ready++
			}
		}
		return ready == len(c.run.state.Nodes), fmt.Sprintf("%d/%d nodes ready and untainted", ready, len(c.run.state.Nodes)), nil
	}); err != nil {
		return err
	}
	if err := Poll(ctx, 60*time.Second, 100*time.Millisecond, "default ServiceAccount", func(ctx context.Context) (bool, string, error) {
		if err := alive(); err != nil {
			return false, "", err
		}
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "not created yet", nil
		}
		return err == nil, fmt.Sprint(err), nil
	}); err != nil {
		return err
	}
	if c.cfg.SkipDNS {
		return nil
	}
	return Poll(ctx, 90*time.Second, 100*time.Millisecond, "CoreDNS available", func(ctx context.Context) (bool, string, error) {
		if err := alive(); err != nil {
			return false, "", err
		}
		d, err := c.Client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return d.Status.AvailableReplicas >= 1, fmt.Sprintf("%d available", d.Status.AvailableReplicas), nil
	})
}

// nodeReady: Ready=True and the controller manager has lifted the not-ready
// taint, so the scheduler will place pods there.
func nodeReady(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			return false
		}
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
