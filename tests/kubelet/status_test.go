//go:build linux

package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func running(name string, ready bool) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Ready: ready, Started: ptr.To(true),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func terminated(name string, code int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Ready: code == 0,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}
}

func waitingStatus(name, reason string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
}

func crashLooping(name string, lastCode int32) corev1.ContainerStatus {
	s := waitingStatus(name, reasonCrashLoopBackOff)
	s.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: lastCode}
	return s
}

func TestPodPhase(t *testing.T) {
	spec := func(policy corev1.RestartPolicy, inits int, names ...string) corev1.PodSpec {
		s := corev1.PodSpec{RestartPolicy: policy}
		for i := 0; i < inits; i++ {
			s.InitContainers = append(s.InitContainers, corev1.Container{Name: []string{"i1", "i2"}[i]})
		}
		for _, n := range names {
			s.Containers = append(s.Containers, corev1.Container{Name: n})
		}
		return s
	}
	tests := map[string]struct {
		spec     corev1.PodSpec
		init     []corev1.ContainerStatus
		ctrs     []corev1.ContainerStatus
		terminal bool
		want     corev1.PodPhase
	}{
		"no statuses":            {spec: spec(corev1.RestartPolicyAlways, 0, "a"), want: corev1.PodPending},
		"creating":               {spec: spec(corev1.RestartPolicyAlways, 0, "a"), ctrs: []corev1.ContainerStatus{waitingStatus("a", reasonContainerCreating)}, want: corev1.PodPending},
		"running":                {spec: spec(corev1.RestartPolicyAlways, 0, "a", "b"), ctrs: []corev1.ContainerStatus{running("a", true), running("b", false)}, want: corev1.PodRunning},
		"one waiting":            {spec: spec(corev1.RestartPolicyAlways, 0, "a", "b"), ctrs: []corev1.ContainerStatus{running("a", true), waitingStatus("b", reasonErrImagePull)}, want: corev1.PodPending},
		"crash loop always":      {spec: spec(corev1.RestartPolicyAlways, 0, "a"), ctrs: []corev1.ContainerStatus{crashLooping("a", 1)}, want: corev1.PodRunning},
		"never succeeded":        {spec: spec(corev1.RestartPolicyNever, 0, "a", "b"), ctrs: []corev1.ContainerStatus{terminated("a", 0), terminated("b", 0)}, want: corev1.PodSucceeded},
		"never failed":           {spec: spec(corev1.RestartPolicyNever, 0, "a", "b"), ctrs: []corev1.ContainerStatus{terminated("a", 0), terminated("b", 2)}, want: corev1.PodFailed},
		"never one running":      {spec: spec(corev1.RestartPolicyNever, 0, "a", "b"), ctrs: []corev1.ContainerStatus{terminated("a", 1), running("b", true)}, want: corev1.PodRunning},
		"on failure succeeded":   {spec: spec(corev1.RestartPolicyOnFailure, 0, "a"), ctrs: []corev1.ContainerStatus{terminated("a", 0)}, want: corev1.PodSucceeded},
		"on failure restarting":  {spec: spec(corev1.RestartPolicyOnFailure, 0, "a"), ctrs: []corev1.ContainerStatus{crashLooping("a", 1)}, want: corev1.PodRunning},
		"init running":           {spec: spec(corev1.RestartPolicyAlways, 2, "a"), init: []corev1.ContainerStatus{terminated("i1", 0), running("i2", false)}, ctrs: []corev1.ContainerStatus{waitingStatus("a", reasonPodInitializing)}, want: corev1.PodPending},
		"init done":              {spec: spec(corev1.RestartPolicyAlways, 2, "a"), init: []corev1.ContainerStatus{terminated("i1", 0), terminated("i2", 0)}, ctrs: []corev1.ContainerStatus{running("a", true)}, want: corev1.PodRunning},
		"init failed never":      {spec: spec(corev1.RestartPolicyNever, 1, "a"), init: []corev1.ContainerStatus{terminated("i1", 1)}, ctrs: []corev1.ContainerStatus{waitingStatus("a", reasonPodInitializing)}, want: corev1.PodFailed},
		"init crash loop":        {spec: spec(corev1.RestartPolicyAlways, 1, "a"), init: []corev1.ContainerStatus{crashLooping("i1", 1)}, ctrs: []corev1.ContainerStatus{waitingStatus("a", reasonPodInitializing)}, want: corev1.PodPending},
		"terminal all exited 0":  {spec: spec(corev1.RestartPolicyAlways, 0, "a"), ctrs: []corev1.ContainerStatus{terminated("a", 0)}, terminal: true, want: corev1.PodSucceeded},
		"terminal killed":        {spec: spec(corev1.RestartPolicyAlways, 0, "a"), ctrs: []corev1.ContainerStatus{terminated("a", 143)}, terminal: true, want: corev1.PodFailed},
		"terminal never started": {spec: spec(corev1.RestartPolicyAlways, 0, "a"), ctrs: []corev1.ContainerStatus{waitingStatus("a", reasonErrImagePull)}, terminal: true, want: corev1.PodFailed},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := podPhase(&tt.spec, tt.init, tt.ctrs, tt.terminal); got != tt.want {
				t.Errorf("podPhase() = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPodConditions(t *testing.T) {
	type want struct{ initialized, containersReady, ready corev1.ConditionStatus }
	T, F := corev1.ConditionTrue, corev1.ConditionFalse
	tests := map[string]struct {
		pod   corev1.Pod
		phase corev1.PodPhase
		init  []corev1.ContainerStatus
		ctrs  []corev1.ContainerStatus
		want  want
	}{
		"all ready": {
			pod:   corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}},
			phase: corev1.PodRunning, ctrs: []corev1.ContainerStatus{running("a", true)},
			want: want{T, T, T},
		},
		"not ready": {
			pod:   corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}, {Name: "b"}}}},
			phase: corev1.PodRunning, ctrs: []corev1.ContainerStatus{running("a", true), running("b", false)},
			want: want{T, F, F},
		},
		"init pending": {
			pod:   corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "i1"}}, Containers: []corev1.Container{{Name: "a"}}}},
			phase: corev1.PodPending, init: []corev1.ContainerStatus{running("i1", false)}, ctrs: []corev1.ContainerStatus{waitingStatus("a", reasonPodInitializing)},
			want: want{F, F, F},
		},
		"readiness gate missing": {
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}},
				ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}}}},
			phase: corev1.PodRunning, ctrs: []corev1.ContainerStatus{running("a", true)},
			want: want{T, T, F},
		},
		"readiness gate true": {
			pod: corev1.Pod{
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}},
					ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}}},
				Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: "example.com/lb", Status: T}}},
			},
			phase: corev1.PodRunning, ctrs: []corev1.ContainerStatus{running("a", true)},
			want: want{T, T, T},
		},
		"completed": {
			pod:   corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}},
			phase: corev1.PodSucceeded, ctrs: []corev1.ContainerStatus{terminated("a", 0)},
			want: want{T, F, F},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			conds := podConditions(&tt.pod, tt.phase, true, tt.init, tt.ctrs)
			get := func(ct corev1.PodConditionType) corev1.ConditionStatus {
				c, ok := findCondition(conds, ct)
				if !ok {
					t.Fatalf("podConditions() has no %s", ct)
				}
				return c.Status
			}
			got := want{get(corev1.PodInitialized), get(corev1.ContainersReady), get(corev1.PodReady)}
			if got != tt.want {
				t.Errorf("podConditions() Initialized/ContainersReady/Ready = %v, want %v (%+v)", got, tt.want, conds)
			}
			if get(corev1.PodReadyToStartContainers) != T {
				t.Errorf("PodReadyToStartContainers not True")
			}
		})
	}
}

func TestMergeConditions(t *testing.T) {
	old := metav1.Unix(100, 0)
	at := metav1.Unix(200, 0)
	list := []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: old},
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: old},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: old},
	}
	got := mergeConditions(list, []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionTrue},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue},
	}, at)
	wantLTT := map[corev1.PodConditionType]metav1.Time{
		corev1.PodScheduled: old, corev1.PodReady: at, corev1.ContainersReady: old, corev1.PodInitialized: at,
	}
	if len(got) != len(wantLTT) {
		t.Fatalf("mergeConditions() = %d conditions, want %d", len(got), len(wantLTT))
	}
	for _, c := range got {
		if !c.LastTransitionTime.Equal(&metav1.Time{Time: wantLTT[c.Type].Time}) {
			t.Errorf("condition %s LastTransitionTime = %v, want %v", c.Type, c.LastTransitionTime, wantLTT[c.Type])
		}
	}
}
