package compile

import (
	"fmt"
	"math/rand/v2"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
)

// messyInputs draws a small cluster in which everything that stale caches
// or unvalidated objects can show happens often: IPs and VIPs claimed
// twice, a VIP that is a pod IP, UIDs twice, endpoints naming the wrong
// pod, bad addresses and ports, names no ServiceAccount can have, strings
// that are not UTF-8, TrafficTargets naming missing or foreign objects.
func messyInputs(r *rand.Rand) Inputs {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	ip := func() string {
		return pick("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "::ffff:10.0.0.2", "fd00::1", "fe80::1%eth0", "0.0.0.0", "bogus", "")
	}
	in := Inputs{
		TrustDomain: pick("", "corp.example"),
		PolicyMode:  pick("", ModeStrict, "weird"),
		Namespaces:  []*corev1.Namespace{meshedNS("a"), namespace("b", nil), meshedNS("kube-system")},
	}
	for i := range 2 + r.IntN(8) {
		p := pod(pick("a", "b", "kube-system", "", "B"), pick("p", "q", "\xff"), pick("u1", "u2", "u3", "u4", fmt.Sprint("u", i), "\xff", "\xfe"), ip(),
			func(p *corev1.Pod) {
				// Objects of one key differ in ResourceVersion, as in any
				// cache.
				p.ResourceVersion = fmt.Sprint(i)
				p.CreationTimestamp = age(r.IntN(3))
				p.Spec.ServiceAccountName = pick("", "sa", "Bad", "x\xfe")
				p.Spec.HostNetwork = r.IntN(6) == 0
				p.Labels = map[string]string{"app": pick("web", "\xc3"), MeshLabel: pick("", MeshDisabled)}
				if r.IntN(3) == 0 {
					p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip()})
				}
			})
		in.Pods = append(in.Pods, p)
	}
	for i := range 1 + r.IntN(5) {
		s := service(pick("a", "b"), pick("s", "t", "u", "\xff", "\xfe"), pick("10.0.0.1", "10.96.0.1", "10.96.0.2", "None", "", "fd00::1"), "http:80:8080", "named:81:web")
		s.CreationTimestamp = age(r.IntN(3))
		s.UID = types.UID(fmt.Sprint("svc", r.IntN(100)))
		s.ResourceVersion = fmt.Sprint(i)
		if r.IntN(3) == 0 {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "dup", Port: 80}, corev1.ServicePort{Name: "zero", Port: 0},
				corev1.ServicePort{Name: "big", Port: 80000, TargetPort: intstr.FromInt32(70000)})
		}
		in.Services = append(in.Services, s)
	}
	for i := range r.IntN(5) {
		var eps []discoveryv1.Endpoint
		for range 1 + r.IntN(4) {
			eps = append(eps, ep(ip(), pick("u1", "u2", "u3", ""), pick2(r, ptr(true), ptr(false), nil)))
		}
		es := slice(pick("a", "b"), pick("s", "t", "u"), fmt.Sprint("es", i), []string{"http:8080", pick("named:9000", "named:9001", "named:0")}, eps...)
		in.EndpointSlices = append(in.EndpointSlices, es)
	}
	in.TCPRoutes = []*specsv1alpha4.TCPRoute{tcpRoute("a", "r", "m", 80, 0), tcpRoute("a", "ok", "", 80)}
	in.HTTPRouteGroups = []*specsv1alpha4.HTTPRouteGroup{routeGroup("a", "g", specsv1alpha4.HTTPMatch{Name: "m", PathRegex: pick("/x", "(")})}
	for i := range r.IntN(4) {
		kind := accessv1alpha3.RuleKind(pick("TCPRoute", "HTTPRouteGroup", "UDPRoute", ""))
		tt := target(pick("a", "b"), pick("t", "t", fmt.Sprint("t", i), "\xff", "\xfe"), saIn(pick("", "a", "b"), pick("sa", "", "Bad", "\xff")),
			[]accessv1alpha3.IdentityBindingSubject{saIn(pick("", "b"), pick("sa", "X", "")), {Kind: accessv1alpha3.SubjectKind(pick("ServiceAccount", "Group")), Name: "y"}},
			rule(kind, pick("r", "ok", "g", "missing"), pick("m", "n")))
		tt.ResourceVersion = fmt.Sprint(i)
		if r.IntN(4) == 0 {
			tt.DeletionTimestamp = &metav1.Time{}
		}
		in.TrafficTargets = append(in.TrafficTargets, tt)
	}
	return in
}

func pick2[T any](r *rand.Rand, s ...T) T { return s[r.IntN(len(s))] }

// TestMessyInputs: whatever the caches hold, nodes accept the set, the
// output does not depend on input order, and a Compiler agrees with
// Compile.
func TestMessyInputs(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	var c Compiler
	for i := range 500 {
		in := messyInputs(r)
		want := Compile(in)
		checkNodeAccepts(t, want)
		checkSameOutput(t, Compile(shuffled(in, r)), want)
		checkSameOutput(t, c.Compile(in), want)
		if t.Failed() {
			t.Fatalf("iteration %d failed", i)
		}
	}
}
