package lifecycle

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const ns = "weft-system"

func daemonSet(name string, annotations map[string]string, deleting bool) *appsv1.DaemonSet {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations}}
	if deleting {
		now := metav1.Now()
		ds.DeletionTimestamp = &now
		ds.Finalizers = []string{"foregroundDeletion"}
	}
	return ds
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestUninstalling(t *testing.T) {
	tests := map[string]struct {
		objs    []runtime.Object
		fail    bool
		want    bool
		wantErr bool
	}{
		"running":                  {objs: []runtime.Object{daemonSet("weft-agent", nil, false)}, want: false},
		"annotated false":          {objs: []runtime.Object{daemonSet("weft-agent", map[string]string{Annotation: "false"}, false)}, want: false},
		"annotated true":           {objs: []runtime.Object{daemonSet("weft-agent", map[string]string{Annotation: "true"}, false)}, want: true},
		"being deleted":            {objs: []runtime.Object{daemonSet("weft-agent", nil, true)}, want: true},
		"gone":                     {objs: []runtime.Object{daemonSet("weft-ztunnel", map[string]string{Annotation: "false"}, false)}, want: true},
		"api error keeps the node": {objs: []runtime.Object{daemonSet("weft-agent", map[string]string{Annotation: "true"}, false)}, fail: true, want: false, wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientset(tt.objs...)
			if tt.fail {
				c.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "weft-agent", errors.New("rbac"))
				})
			}
			got, err := Uninstalling(context.Background(), c, ns, "weft-agent")
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("Uninstalling() = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestMarkUninstalling(t *testing.T) {
	t.Run("both daemonsets", func(t *testing.T) {
		c := fake.NewClientset(daemonSet("weft-agent", map[string]string{Annotation: "false", "other": "kept"}, false), daemonSet("weft-ztunnel", nil, false),
			daemonSet("unrelated", nil, false))
		if err := MarkUninstalling(context.Background(), c, ns); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"weft-agent", "weft-ztunnel"} {
			if got, err := Uninstalling(context.Background(), c, ns, name); !got || err != nil {
				t.Errorf("after MarkUninstalling, Uninstalling(%s) = %v, %v; want true", name, got, err)
			}
		}
		ds, _ := c.AppsV1().DaemonSets(ns).Get(context.Background(), "weft-agent", metav1.GetOptions{})
		if ds.Annotations["other"] != "kept" {
			t.Errorf("annotations after MarkUninstalling = %v; other annotations lost", ds.Annotations)
		}
		if got, _ := Uninstalling(context.Background(), c, ns, "unrelated"); got {
			t.Errorf("MarkUninstalling annotated a DaemonSet that is not weft's")
		}
	})
	t.Run("ztunnel not installed", func(t *testing.T) {
		c := fake.NewClientset(daemonSet("weft-agent", nil, false))
		if err := MarkUninstalling(context.Background(), c, ns); err != nil {
			t.Fatalf("MarkUninstalling without weft-ztunnel: %v", err)
		}
		if got, _ := Uninstalling(context.Background(), c, ns, "weft-agent"); !got {
			t.Errorf("weft-agent not marked")
		}
	})
	t.Run("api error", func(t *testing.T) {
		c := fake.NewClientset(daemonSet("weft-agent", nil, false))
		c.PrependReactor("patch", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "weft-agent", errors.New("rbac"))
		})
		if err := MarkUninstalling(context.Background(), c, ns); err == nil {
			t.Fatal("MarkUninstalling with patch forbidden: no error (the hook would succeed without marking)")
		}
	})
}

// TestWatcherAnswersAfterCredentialsAreGone: Helm deletes the RBAC right
// after the DaemonSet; the watcher answers from the watched annotation.
func TestWatcherAnswersAfterCredentialsAreGone(t *testing.T) {
	c := fake.NewClientset(daemonSet("weft-agent", map[string]string{Annotation: "false"}, false))
	w := NewWatcher(c, ns, "weft-agent", discard())
	w.retry = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	waitFor(t, "watcher has seen the daemonset", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.seen
	})
	if w.Uninstalling(context.Background(), time.Second) {
		t.Fatal("Uninstalling of a running release = true")
	}
	if err := MarkUninstalling(context.Background(), c, ns); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watcher has seen the annotation", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.uninstalling
	})
	c.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewUnauthorized("service account deleted")
	})
	if !w.Uninstalling(context.Background(), time.Second) {
		t.Error("Uninstalling after the credentials were deleted = false; want true from the watched annotation")
	}
}

func TestWatcherUnsureKeeps(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewUnauthorized("no")
	})
	w := NewWatcher(c, ns, "weft-agent", discard())
	if w.Uninstalling(context.Background(), time.Second) {
		t.Error("Uninstalling with no answer and nothing watched = true; want false (keep the node's state)")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
