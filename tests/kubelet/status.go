//go:build linux

package kubelet

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Waiting and terminated reasons, as kubelet reports them.
const (
	reasonContainerCreating    = "ContainerCreating"
	reasonPodInitializing      = "PodInitializing"
	reasonCrashLoopBackOff     = "CrashLoopBackOff"
	reasonErrImagePull         = "ErrImagePull"
	reasonImagePullBackOff     = "ImagePullBackOff"
	reasonCreateConfigError    = "CreateContainerConfigError"
	reasonCreateContainerError = "CreateContainerError"
	reasonStartError           = "StartError"
	reasonCompleted            = "Completed"
	reasonError                = "Error"
)

// now returns the current time at the API's precision (seconds), so statuses
// built here compare equal to what the API server returns.
func now() metav1.Time { return metav1.NewTime(time.Now().Truncate(time.Second)) }

// isRestartableInit reports a sidecar: an init container with restartPolicy
// Always.
func isRestartableInit(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

func findStatus(list []corev1.ContainerStatus, name string) (*corev1.ContainerStatus, bool) {
	for i := range list {
		if list[i].Name == name {
			return &list[i], true
		}
	}
	return nil, false
}

// podPhase is kubelet's getPhase over the container statuses. terminal is set
// once the pod has been stopped for good (deleted), so a Running pod ends
// Succeeded or Failed.
func podPhase(spec *corev1.PodSpec, initStatuses, statuses []corev1.ContainerStatus, terminal bool) corev1.PodPhase {
	pendingInit, pendingSidecars, failedInit := 0, 0, 0
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		st, ok := findStatus(initStatuses, c.Name)
		if isRestartableInit(c) {
			if !ok || st.State.Running == nil || st.Started == nil || !*st.Started {
				pendingSidecars++
			}
			continue
		}
		switch {
		case !ok:
			pendingInit++
		case st.State.Running != nil:
			pendingInit++
		case st.State.Terminated != nil:
			if st.State.Terminated.ExitCode != 0 {
				failedInit++
			}
		case st.State.Waiting != nil:
			if lt := st.LastTerminationState.Terminated; lt != nil {
				if lt.ExitCode != 0 {
					failedInit++
				}
			} else {
				pendingInit++
			}
		default:
			pendingInit++
		}
	}
	unknown, running, waiting, stopped, succeeded := 0, 0, 0, 0, 0
	for i := range spec.Containers {
		st, ok := findStatus(statuses, spec.Containers[i].Name)
		switch {
		case !ok:
			unknown++
		case st.State.Running != nil:
			running++
		case st.State.Terminated != nil:
			stopped++
			if st.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case st.State.Waiting != nil:
			if lt := st.LastTerminationState.Terminated; lt != nil {
				stopped++
				if lt.ExitCode == 0 {
					succeeded++
				}
			} else {
				waiting++
			}
		default:
			unknown++
		}
	}
	if failedInit > 0 && spec.RestartPolicy == corev1.RestartPolicyNever {
		return corev1.PodFailed
	}
	switch {
	case pendingInit > 0 || (pendingSidecars > 0 && running+stopped == 0):
		if terminal {
			return corev1.PodFailed
		}
		return corev1.PodPending
	case waiting > 0:
		if terminal {
			return corev1.PodFailed
		}
		return corev1.PodPending
	case running > 0 && unknown == 0:
		return corev1.PodRunning
	case running == 0 && stopped > 0 && unknown == 0:
		// A terminal pod's containers are not restarted, whatever the policy.
		if terminal {
			if stopped == succeeded {
				return corev1.PodSucceeded
			}
			return corev1.PodFailed
		}
		if spec.RestartPolicy == corev1.RestartPolicyAlways {
			return corev1.PodRunning
		}
		if stopped == succeeded {
			return corev1.PodSucceeded
		}
		if spec.RestartPolicy == corev1.RestartPolicyNever {
			return corev1.PodFailed
		}
		return corev1.PodRunning
	default:
		return corev1.PodPending
	}
}

// podConditions computes the conditions kubelet owns (PodReadyToStartContainers,
// Initialized, ContainersReady, Ready); existing holds the pod's current
// conditions, for readiness gates.
func podConditions(pod *corev1.Pod, phase corev1.PodPhase, sandboxReady bool, initStatuses, statuses []corev1.ContainerStatus) []corev1.PodCondition {
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg}
		if ok {
			c = corev1.PodCondition{Type: t, Status: corev1.ConditionTrue}
		}
		return c
	}
	out := []corev1.PodCondition{cond(corev1.PodReadyToStartContainers, sandboxReady, "", "")}

	// Initialized.
	var incomplete []string
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		st, ok := findStatus(initStatuses, c.Name)
		done := ok && st.State.Terminated != nil && st.State.Terminated.ExitCode == 0
		if isRestartableInit(c) {
			done = ok && st.Started != nil && *st.Started
		}
		if !done {
			incomplete = append(incomplete, c.Name)
		}
	}
	initialized := len(incomplete) == 0 || phase == corev1.PodSucceeded ||
		(phase == corev1.PodRunning || phase == corev1.PodFailed) && hadCondition(pod, corev1.PodInitialized)
	out = append(out, cond(corev1.PodInitialized, initialized, "ContainersNotInitialized",
		fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(incomplete, " "))))

	// ContainersReady.
	var unknown, unready []string
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if !isRestartableInit(c) {
			continue
		}
		if st, ok := findStatus(initStatuses, c.Name); !ok {
			unknown = append(unknown, c.Name)
		} else if !st.Ready {
			unready = append(unready, c.Name)
		}
	}
	for i := range pod.Spec.Containers {
		name := pod.Spec.Containers[i].Name
		if st, ok := findStatus(statuses, name); !ok {
			unknown = append(unknown, name)
		} else if !st.Ready {
			unready = append(unready, name)
		}
	}
	var reason, msg string
	switch {
	case phase == corev1.PodSucceeded && len(unknown) == 0:
		reason, msg = "PodCompleted", ""
	case len(unknown) > 0 || len(unready) > 0:
		reason = "ContainersNotReady"
		var parts []string
		if len(unknown) > 0 {
			parts = append(parts, fmt.Sprintf("containers with unknown status: [%s]", strings.Join(unknown, " ")))
		}
		if len(unready) > 0 {
			parts = append(parts, fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " ")))
		}
		msg = strings.Join(parts, ", ")
	}
	ready := reason == ""
	out = append(out, cond(corev1.ContainersReady, ready, reason, msg))

	// Ready: ContainersReady and every readiness gate.
	if ready {
		var gates []string
		for _, g := range pod.Spec.ReadinessGates {
			c, ok := findCondition(pod.Status.Conditions, g.ConditionType)
			switch {
			case !ok:
				gates = append(gates, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType))
			case c.Status != corev1.ConditionTrue:
				gates = append(gates, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %v", g.ConditionType, c.Status))
			}
		}
		if len(gates) > 0 {
			ready, reason, msg = false, "ReadinessGatesNotReady", strings.Join(gates, ", ")
		}
	}
	out = append(out, cond(corev1.PodReady, ready, reason, msg))
	return out
}

func hadCondition(pod *corev1.Pod, t corev1.PodConditionType) bool {
	c, ok := findCondition(pod.Status.Conditions, t)
	return ok && c.Status == corev1.ConditionTrue
}

func findCondition(list []corev1.PodCondition, t corev1.PodConditionType) (*corev1.PodCondition, bool) {
	for i := range list {
		if list[i].Type == t {
			return &list[i], true
		}
	}
	return nil, false
}

// mergeConditions sets each of set in list, keeping LastTransitionTime when
// the status does not change and every condition kubelet does not own.
func mergeConditions(list []corev1.PodCondition, set []corev1.PodCondition, at metav1.Time) []corev1.PodCondition {
	out := slices.Clone(list)
	for _, c := range set {
		if old, ok := findCondition(out, c.Type); ok {
			c.LastTransitionTime = old.LastTransitionTime
			if old.Status != c.Status || c.LastTransitionTime.IsZero() {
				c.LastTransitionTime = at
			}
			c.LastProbeTime = old.LastProbeTime
			*old = c
			continue
		}
		c.LastTransitionTime = at
		out = append(out, c)
	}
	return out
}

// statusEqual reports whether two pod statuses are semantically equal, so
// unchanged statuses are not written.
func statusEqual(a, b *corev1.PodStatus) bool {
	return apiequality.Semantic.DeepEqual(a, b)
}
