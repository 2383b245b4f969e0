package controller

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
)

// Results of a status write, the values of the result label of
// weft_operator_status_writes_total.
const (
	writeOK       = "ok"
	writeConflict = "conflict"
	writeGone     = "gone"
	writeError    = "error"
)

// writtenStatus is a status the controller wrote, and the resourceVersion
// of the object it replaced: while the cache still holds that version, the
// written status is the current one.
type writtenStatus struct {
	replaced string
	status   accessv1alpha3.TrafficTargetStatus
}

// writeStatuses brings each TrafficTarget's status to its compiled Accepted
// condition, writing only those that change.
func (c *Controller) writeStatuses(ctx context.Context, accepted map[types.NamespacedName]metav1.Condition) error {
	var errs []error
	for key, cond := range accepted {
		obj, ok, err := c.watch.trafficTargets.GetIndexer().GetByKey(key.String())
		if err != nil || !ok {
			continue
		}
		tt, ok := obj.(*accessv1alpha3.TrafficTarget)
		if !ok {
			continue
		}
		current := tt.Status
		if w, ok := c.written[key]; ok && w.replaced == tt.ResourceVersion {
			current = w.status
		}
		next, changed := desiredStatus(tt, current, cond)
		if !changed {
			continue
		}
		if err := c.writeStatus(ctx, tt, next); err != nil {
			errs = append(errs, err)
		}
	}
	for key := range c.written {
		if _, ok := accepted[key]; !ok {
			delete(c.written, key)
		}
	}
	return errors.Join(errs...)
}

// desiredStatus returns current with cond as its Accepted condition (as
// meta.SetStatusCondition sets it: the transition time moves only when the
// status flips), tt's generation observed and its sources summarised, and
// whether that differs from current. It never modifies tt or current.
func desiredStatus(tt *accessv1alpha3.TrafficTarget, current accessv1alpha3.TrafficTargetStatus, cond metav1.Condition) (accessv1alpha3.TrafficTargetStatus, bool) {
	next := *current.DeepCopy()
	cond.ObservedGeneration = tt.Generation
	cond.LastTransitionTime = metav1.Time{}
	changed := meta.SetStatusCondition(&next.Conditions, cond)
	if next.ObservedGeneration != tt.Generation {
		next.ObservedGeneration = tt.Generation
		changed = true
	}
	if s := tt.SourcesSummary(); next.SourcesSummary != s {
		next.SourcesSummary = s
		changed = true
	}
	return next, changed
}

// writeStatus writes status to tt through the status subresource. A
// conflict is an error (the work item is retried against the newer
// version); a TrafficTarget deleted meanwhile is not.
func (c *Controller) writeStatus(ctx context.Context, tt *accessv1alpha3.TrafficTarget, status accessv1alpha3.TrafficTargetStatus) error {
	obj := tt.DeepCopy()
	obj.Status = status
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("encode status of traffictarget %s/%s: %w", tt.Namespace, tt.Name, err)
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetAPIVersion(accessv1alpha3.SchemeGroupVersion.String())
	u.SetKind("TrafficTarget")
	_, err = c.dynamic.Resource(TrafficTargetsResource).Namespace(tt.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: FieldManager})
	switch {
	case err == nil:
		c.metrics.statusWrites.WithLabelValues(writeOK).Inc()
		c.written[types.NamespacedName{Namespace: tt.Namespace, Name: tt.Name}] = writtenStatus{replaced: tt.ResourceVersion, status: status}
		c.log.Debug("wrote traffictarget status", "traffictarget", tt.Namespace+"/"+tt.Name, "generation", tt.Generation)
		return nil
	case apierrors.IsNotFound(err):
		c.metrics.statusWrites.WithLabelValues(writeGone).Inc()
		return nil
	case apierrors.IsConflict(err):
		c.metrics.statusWrites.WithLabelValues(writeConflict).Inc()
	default:
		c.metrics.statusWrites.WithLabelValues(writeError).Inc()
	}
	return fmt.Errorf("update status of traffictarget %s/%s: %w", tt.Namespace, tt.Name, err)
}
