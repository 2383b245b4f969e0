package compile

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
)

// benchInputs is the control-plane bench's cluster: 10,000 pods (1,000
// Deployments of 10) on 100 nodes, 1,000 Services with their
// EndpointSlices and 100 TrafficTargets. A policy change must reach 100
// nodes in ≤ 1 s p99, so one compilation must stay well under 100 ms.
func benchInputs(b *testing.B) Inputs {
	b.Helper()
	in := clusterInputs(1000, 10, 100, 100)
	out := Compile(in)
	checkNodeAccepts(b, out)
	if n := len(out.Resources); n != 10000+1000+100+1 {
		b.Fatalf("%d resources, want %d", n, 10000+1000+100+1)
	}
	return in
}

// BenchmarkCompile compiles everything from scratch, as after an operator
// restart.
func BenchmarkCompile(b *testing.B) {
	in := benchInputs(b)
	b.ReportAllocs()
	for b.Loop() {
		Compile(in)
	}
}

// BenchmarkCompilerPolicyChange recompiles after one TrafficTarget changed,
// as the operator's compile loop does.
func BenchmarkCompilerPolicyChange(b *testing.B) {
	in := benchInputs(b)
	var c Compiler
	c.Compile(in)
	// Two versions of one TrafficTarget, swapped on every iteration.
	tts := [2][]*accessv1alpha3.TrafficTarget{in.TrafficTargets, slices.Clone(in.TrafficTargets)}
	tt := tts[1][50].DeepCopy()
	tt.Spec.Sources = append(tt.Spec.Sources, saIn("ns3", "newcomer"))
	tt.ResourceVersion = "2"
	tts[1][50] = tt
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		in.TrafficTargets = tts[i%2]
		c.Compile(in)
	}
}

// BenchmarkCompilerPodAdded recompiles after one pod was added (and, on
// the next iteration, removed).
func BenchmarkCompilerPodAdded(b *testing.B) {
	in := benchInputs(b)
	var c Compiler
	c.Compile(in)
	pods := [2][]*corev1.Pod{in.Pods, append(slices.Clone(in.Pods), pod("ns0", "extra", "extra-uid", "10.200.0.1"))}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		in.Pods = pods[i%2]
		c.Compile(in)
	}
}
