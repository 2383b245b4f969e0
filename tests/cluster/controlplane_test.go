package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestControlPlane starts only the control plane and checks what the rest of
// the harness relies on: the host reaches the API server over the underlay,
// authorization is Node+RBAC (a node's credentials are refused what its pods
// do not need), the version is the real one, and the audit log records who
// did what.
func TestControlPlane(t *testing.T) {
	RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Name: "cp-test", controlPlaneOnly: true,
		Log: slog.New(slog.NewTextHandler(tbWriter{t}, nil))})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	defer func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
		if netnsExists(netnsName(c.RunID(), "cp")) {
			t.Errorf("control-plane netns survives Stop")
		}
	}()

	v, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if want := c.tools.versions["KUBERNETES_VERSION"]; v.GitVersion != want {
		t.Errorf("server version %s, want %s", v.GitVersion, want)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", c.run.path("kubeconfigs", "node-node0.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = node.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("node credentials listing secrets: err = %v, want Forbidden", err)
	}
	if _, err := node.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("node credentials listing services (kubelet needs it): %v", err)
	}
	if err := Poll(ctx, 10*time.Second, 100*time.Millisecond, "audit entry", func(context.Context) (bool, string, error) {
		data, err := os.ReadFile(c.AuditLog())
		return bytes.Contains(data, []byte(`"username":"system:node:node0"`)) && bytes.Contains(data, []byte(`"resource":"secrets"`)), "", err
	}); err != nil {
		t.Error(err)
	}
	if out, err := output("ip", "route", "get", c.addr.controlPlane().String()); err != nil || !strings.Contains(out, hostVethName(c.RunID())) {
		t.Errorf("host route to the API server: %q, %v; want via %s", out, err, hostVethName(c.RunID()))
	}
}
