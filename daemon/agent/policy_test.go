package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	enrolled := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{MeshLabel: MeshEnabled}}}
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if mut != nil {
			mut(p)
		}
		return p
	}
	excluded := map[string]bool{"kube-system": true, "weft-system": true}
	tests := map[string]struct {
		ns   *corev1.Namespace
		pod  *corev1.Pod
		want bool
	}{
		"enrolled namespace":     {enrolled, pod(nil), true},
		"plain namespace":        {plain, pod(nil), false},
		"namespace unknown":      {nil, pod(nil), false},
		"pod deleted":            {enrolled, nil, false},
		"host network":           {enrolled, pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), false},
		"opted out":              {enrolled, pod(func(p *corev1.Pod) { p.Labels = map[string]string{MeshLabel: MeshDisabled} }), false},
		"other pod label":        {enrolled, pod(func(p *corev1.Pod) { p.Labels = map[string]string{MeshLabel: "yes"} }), true},
		"kube-system":            {enrolled, pod(func(p *corev1.Pod) { p.Namespace = "kube-system" }), false},
		"install namespace":      {enrolled, pod(func(p *corev1.Pod) { p.Namespace = "weft-system" }), false},
		"finished":               {enrolled, pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), false},
		"pending (cni path)":     {enrolled, pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), true},
		"namespace label casing": {&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{MeshLabel: "Enabled"}}}, pod(nil), false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := decide(tt.ns, tt.pod, excluded)
			if got.Mesh != tt.want {
				t.Errorf("decide() = %+v, want mesh=%v", got, tt.want)
			}
			if got.Reason == "" {
				t.Errorf("decide() gave no reason")
			}
		})
	}
}
