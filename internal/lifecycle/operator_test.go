package lifecycle

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestRemoveOperatorState: the operator is scaled to zero, its trust-bundle
// ConfigMaps and the CA it generated are deleted; a user's CA and other
// ConfigMaps stay. (The real run is tests/e2e TestInstall; this pins the
// selection logic.)
func TestRemoveOperatorState(t *testing.T) {
	one := int32(1)
	managed := map[string]string{"app.kubernetes.io/managed-by": "weft-operator"}
	objs := func(generated bool) *fake.Clientset {
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "weft-ca", Namespace: "weft-system"}}
		if generated {
			secret.Annotations = map[string]string{GeneratedAnnotation: "yes"}
		}
		return fake.NewClientset(
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: OperatorDeployment, Namespace: "weft-system"}, Spec: appsv1.DeploymentSpec{Replicas: &one}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: TrustBundleConfigMap, Namespace: "shop", Labels: managed}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-config", Namespace: "shop", Labels: managed}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: TrustBundleConfigMap, Namespace: "other"}}, // not ours
			secret,
		)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, generated := range []bool{true, false} {
		c := objs(generated)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := RemoveOperatorState(ctx, c, "weft-system", "weft-ca", log); err != nil {
			t.Fatalf("RemoveOperatorState (generated CA %v): %v", generated, err)
		}
		cancel()
		d, _ := c.AppsV1().Deployments("weft-system").Get(context.Background(), OperatorDeployment, metav1.GetOptions{})
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 0 {
			t.Errorf("operator replicas = %v, want 0", d.Spec.Replicas)
		}
		if _, err := c.CoreV1().ConfigMaps("shop").Get(context.Background(), TrustBundleConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("shop/%s: %v, want deleted", TrustBundleConfigMap, err)
		}
		for _, keep := range [][2]string{{"shop", "app-config"}, {"other", TrustBundleConfigMap}} {
			if _, err := c.CoreV1().ConfigMaps(keep[0]).Get(context.Background(), keep[1], metav1.GetOptions{}); err != nil {
				t.Errorf("%s/%s: %v, want kept", keep[0], keep[1], err)
			}
		}
		_, err := c.CoreV1().Secrets("weft-system").Get(context.Background(), "weft-ca", metav1.GetOptions{})
		if generated && !apierrors.IsNotFound(err) {
			t.Errorf("generated CA secret: %v, want deleted", err)
		}
		if !generated && err != nil {
			t.Errorf("user's CA secret: %v, want kept", err)
		}
	}
	// File mode: no operator, nothing touched.
	c := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "weft-ca", Namespace: "weft-system", Annotations: map[string]string{GeneratedAnnotation: "yes"}}})
	if err := RemoveOperatorState(context.Background(), c, "weft-system", "weft-ca", log); err != nil {
		t.Fatalf("RemoveOperatorState without an operator: %v", err)
	}
	if _, err := c.CoreV1().Secrets("weft-system").Get(context.Background(), "weft-ca", metav1.GetOptions{}); err != nil {
		t.Errorf("without an operator the CA secret was touched: %v", err)
	}
}
