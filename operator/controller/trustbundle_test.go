package controller

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weftmesh/weft/operator/compile"
)

func startPublisher(tb testing.TB, trust *fakeTrust, objs ...runtime.Object) *fake.Clientset {
	tb.Helper()
	client := fake.NewClientset(objs...)
	p, err := NewTrustBundlePublisher(PublisherOptions{
		Client: client, TrustBundle: trust, ExcludeNamespaces: []string{"weft-system"},
		Log: slog.New(slog.NewTextHandler(tb.Output(), nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	return client
}

// bundleIn returns the published bundle of ns, or why there is none.
func bundleIn(client *fake.Clientset, ns string) (string, bool, string) {
	cm, err := client.CoreV1().ConfigMaps(ns).Get(context.Background(), TrustBundleConfigMap, metav1.GetOptions{})
	if err != nil {
		return "", false, err.Error()
	}
	return cm.Data[TrustBundleKey], true, fmt.Sprintf("data %v", cm.Data)
}

func TestTrustBundlePublisher(t *testing.T) {
	trust := newFakeTrust("root-1")
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}
	users := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "plain", Name: TrustBundleConfigMap}, Data: map[string]string{"mine": "yes"}}
	client := startPublisher(t, trust, namespace("shop"), namespace("weft-system"), plain, users)
	ctx := context.Background()

	waitFor(t, "the bundle in shop", func() (bool, string) {
		got, ok, why := bundleIn(client, "shop")
		return ok && got == "root-1", why
	})

	trust.setBundle("root-1\nroot-2")
	waitFor(t, "the rotated bundle in shop", func() (bool, string) {
		got, ok, why := bundleIn(client, "shop")
		return ok && got == "root-1\nroot-2", why
	})

	// Drift is repaired.
	cm, err := client.CoreV1().ConfigMaps("shop").Get(ctx, TrustBundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[TrustBundleKey] = "tampered"
	if _, err := client.CoreV1().ConfigMaps("shop").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bundle restored in shop", func() (bool, string) {
		got, ok, why := bundleIn(client, "shop")
		return ok && got == "root-1\nroot-2", why
	})

	// A namespace that joins gets it; one that leaves loses it.
	plain2 := plain.DeepCopy()
	plain2.Labels = map[string]string{compile.MeshLabel: compile.MeshEnabled}
	shop := namespace("shop")
	shop.Labels = nil
	for _, ns := range []*corev1.Namespace{plain2, shop} {
		if _, err := client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the bundle gone from shop", func() (bool, string) {
		_, err := client.CoreV1().ConfigMaps("shop").Get(ctx, TrustBundleConfigMap, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	// plain had a ConfigMap of that name that weft did not create: it is
	// taken over once plain joins, as the bundle's name is weft's.
	waitFor(t, "the bundle in plain", func() (bool, string) {
		got, ok, why := bundleIn(client, "plain")
		return ok && got == "root-1\nroot-2", why
	})

	if _, ok, _ := bundleIn(client, "weft-system"); ok {
		t.Error("the excluded namespace weft-system got the bundle, want none")
	}
}

func TestTrustBundlePublisherLeavesOthersAlone(t *testing.T) {
	trust := newFakeTrust("root-1")
	users := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "plain", Name: TrustBundleConfigMap}, Data: map[string]string{"mine": "yes"}}
	client := startPublisher(t, trust, namespace("shop"), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}, users)
	waitFor(t, "the bundle in shop", func() (bool, string) {
		got, ok, why := bundleIn(client, "shop")
		return ok && got == "root-1", why
	})
	cm, err := client.CoreV1().ConfigMaps("plain").Get(context.Background(), TrustBundleConfigMap, metav1.GetOptions{})
	if err != nil || cm.Data["mine"] != "yes" {
		t.Errorf("a user's ConfigMap in an unenrolled namespace = %v, %v, want it untouched", cm, err)
	}
}
