package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
)

// Annotation marks a weft DaemonSet whose release is being uninstalled; its
// value is "true" then. The chart sets it to "false" on every install and
// upgrade, so an uninstall that failed after the hook ran does not make a
// later rollout clean up the node.
const Annotation = "weft.io/uninstalling"

// DaemonSets are the node components MarkUninstalling annotates.
var DaemonSets = []string{"weft-agent", "weft-ztunnel"}

// FieldManager is the field manager of MarkUninstalling's patches.
const FieldManager = "weft-lifecycle"

// Client is the part of kubernetes.Interface this package uses.
type Client interface {
	AppsV1() appsv1client.AppsV1Interface
}

// MarkUninstalling annotates every weft DaemonSet in namespace that exists
// with Annotation=true. A DaemonSet that does not exist (a component the
// release does not install) is skipped.
func MarkUninstalling(ctx context.Context, c Client, namespace string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{Annotation: "true"}}})
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range DaemonSets {
		_, err := c.AppsV1().DaemonSets(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("mark daemonset %s/%s uninstalling: %w", namespace, name, err))
		}
	}
	return errors.Join(errs...)
}

// Uninstalling reports whether the DaemonSet namespace/daemonSet is being
// uninstalled: it is NotFound, has a deletionTimestamp, or carries
// Annotation=true. On any other error it reports false with the error:
// callers keep the node's state when unsure.
func Uninstalling(ctx context.Context, c Client, namespace, daemonSet string) (bool, error) {
	ds, err := c.AppsV1().DaemonSets(namespace).Get(ctx, daemonSet, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get daemonset %s/%s: %w", namespace, daemonSet, err)
	}
	return marked(ds), nil
}

func marked(ds *appsv1.DaemonSet) bool {
	return ds.DeletionTimestamp != nil || ds.Annotations[Annotation] == "true"
}

// Watcher follows one DaemonSet so that Uninstalling can answer even after
// the component's credentials are gone. Create it with NewWatcher; it is
// safe for concurrent use.
type Watcher struct {
	client          Client
	namespace, name string
	log             *slog.Logger
	retry           time.Duration // the pause before re-listing after a failed or ended watch

	mu sync.Mutex // guards the fields below
	// seen: the watch has observed the DaemonSet's state at least once.
	seen         bool
	uninstalling bool
}

// NewWatcher returns a Watcher of namespace/daemonSet; Run follows it.
func NewWatcher(c Client, namespace, daemonSet string, log *slog.Logger) *Watcher {
	return &Watcher{client: c, namespace: namespace, name: daemonSet, log: log, retry: time.Second}
}

// Run follows the DaemonSet until ctx ends; API errors are logged and
// retried, never returned.
func (w *Watcher) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := w.follow(ctx); err != nil && ctx.Err() == nil {
			w.log.Debug("follow daemonset", "daemonset", w.namespace+"/"+w.name, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(w.retry):
		}
	}
	return nil
}

// follow lists the one DaemonSet, then watches it until the watch ends.
func (w *Watcher) follow(ctx context.Context) error {
	sel := fields.OneTermEqualSelector("metadata.name", w.name).String()
	dss := w.client.AppsV1().DaemonSets(w.namespace)
	list, err := dss.List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return fmt.Errorf("list daemonset %s/%s: %w", w.namespace, w.name, err)
	}
	gone := true
	for i := range list.Items {
		if list.Items[i].Name == w.name {
			gone = false
			w.set(marked(&list.Items[i]))
		}
	}
	if gone {
		w.set(true)
	}
	wi, err := dss.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true})
	if err != nil {
		return fmt.Errorf("watch daemonset %s/%s: %w", w.namespace, w.name, err)
	}
	defer wi.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				if ds, ok := ev.Object.(*appsv1.DaemonSet); ok && ds.Name == w.name {
					w.set(ev.Type == watch.Deleted || marked(ds))
				}
			case watch.Error:
				return fmt.Errorf("watch daemonset %s/%s: %w", w.namespace, w.name, apierrors.FromObject(ev.Object))
			}
		}
	}
}

func (w *Watcher) set(uninstalling bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if uninstalling && !w.uninstalling {
		w.log.Info("release is being uninstalled", "daemonset", w.namespace+"/"+w.name)
	}
	w.seen, w.uninstalling = true, uninstalling
}

// Uninstalling asks the API server (within timeout) and, when it cannot
// answer, falls back to what the watch last saw; with neither it reports
// false (keep the node's state).
func (w *Watcher) Uninstalling(ctx context.Context, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	now, err := Uninstalling(ctx, w.client, w.namespace, w.name)
	if err == nil {
		return now
	}
	w.mu.Lock()
	seen, last := w.seen, w.uninstalling
	w.mu.Unlock()
	w.log.Warn("ask whether the release is being uninstalled; answering from the last watched state", "err", err, "seen", seen, "uninstalling", last)
	return last
}
