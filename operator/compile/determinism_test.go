package compile

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
)

// clusterInputs builds a cluster of deployments×replicas pods over nodes
// nodes: one ReplicaSet, Service and EndpointSlice (two for half of them,
// whose named target ports have two numbers) per Deployment, namespaces of 20 Deployments (every other
// one meshed), and targets TrafficTargets, each allowing three other
// Deployments' ServiceAccounts on a TCPRoute and, for every fourth, an
// HTTPRouteGroup.
func clusterInputs(deployments, replicas, nodes, targets int) Inputs {
	in := Inputs{PolicyMode: ModeStrict}
	nsOf := func(d int) string { return "ns" + strconv.Itoa(d/20) }
	for n := 0; n*20 < deployments; n++ {
		if n%2 == 0 {
			in.Namespaces = append(in.Namespaces, meshedNS("ns"+strconv.Itoa(n)))
		} else {
			in.Namespaces = append(in.Namespaces, namespace("ns"+strconv.Itoa(n), nil))
		}
	}
	yes := ptr(true)
	for d := range deployments {
		ns, name := nsOf(d), "app"+strconv.Itoa(d)
		rsName := name + "-5f7c9"
		in.ReplicaSets = append(in.ReplicaSets, replicaSet(ns, rsName, name))
		// Even Deployments have numeric target ports; odd ones named
		// ones, served on other numbers by their second half (a rollout
		// that changed the container ports), in a second slice.
		svcIP := fmt.Sprintf("10.96.%d.%d", d/250, d%250+1)
		if d%2 == 0 {
			in.Services = append(in.Services, service(ns, name, svcIP, "http:80:8080", "grpc:9090:9090"))
		} else {
			in.Services = append(in.Services, service(ns, name, svcIP, "http:80:http", "grpc:9090:grpc"))
		}
		var eps, newEps []discoveryv1.Endpoint
		for r := range replicas {
			i := d*replicas + r
			uid := fmt.Sprintf("pod-%06d", i)
			ip := fmt.Sprintf("10.%d.%d.%d", 1+i/62500, i/250%250, i%250+1)
			p := pod(ns, fmt.Sprintf("%s-%s-%05d", name, "5f7c9", r), uid, ip,
				ownedBy("ReplicaSet", rsName), labels("app", name, "version", "v1", "pod-template-hash", "5f7c9"),
				func(p *corev1.Pod) {
					p.Spec.NodeName = "node-" + strconv.Itoa(i%nodes)
					p.Spec.ServiceAccountName = name
				})
			in.Pods = append(in.Pods, p)
			if d%2 == 1 && r >= replicas/2 {
				newEps = append(newEps, ep(ip, uid, yes))
			} else {
				eps = append(eps, ep(ip, uid, yes))
			}
		}
		in.EndpointSlices = append(in.EndpointSlices, slice(ns, name, name+"-abcde", []string{"http:8080", "grpc:9090"}, eps...))
		if len(newEps) > 0 {
			in.EndpointSlices = append(in.EndpointSlices, slice(ns, name, name+"-fghij", []string{"http:8081", "grpc:9091"}, newEps...))
		}
	}
	for t := range targets {
		d := t * deployments / max(targets, 1)
		ns, name := nsOf(d), "app"+strconv.Itoa(d)
		in.TCPRoutes = append(in.TCPRoutes, tcpRoute(ns, name+"-tcp", "", 8080, 9090))
		rules := []accessv1alpha3.TrafficTargetRule{rule(accessv1alpha3.KindTCPRoute, name+"-tcp")}
		if t%4 == 0 {
			in.HTTPRouteGroups = append(in.HTTPRouteGroups, routeGroup(ns, name+"-http",
				specsv1alpha4.HTTPMatch{Name: "read", PathRegex: "/api/.*", Methods: []specsv1alpha4.HTTPRouteMethod{"GET"}},
				specsv1alpha4.HTTPMatch{Name: "write", PathRegex: "/api/.*", Methods: []specsv1alpha4.HTTPRouteMethod{"POST"}}))
			rules = append(rules, rule(accessv1alpha3.KindHTTPRouteGroup, name+"-http", "read"))
		}
		var srcs []accessv1alpha3.IdentityBindingSubject
		for k := 1; k <= 3; k++ {
			s := (d + k*7) % deployments
			srcs = append(srcs, saIn(nsOf(s), "app"+strconv.Itoa(s)))
		}
		in.TrafficTargets = append(in.TrafficTargets, target(ns, name+"-allow", sa(name), srcs, rules...))
	}
	return in
}

// shuffled returns in with every slice copied and shuffled by r.
func shuffled(in Inputs, r *rand.Rand) Inputs {
	in.Namespaces = shuffle(in.Namespaces, r)
	in.Pods = shuffle(in.Pods, r)
	in.Services = shuffle(in.Services, r)
	in.EndpointSlices = shuffle(in.EndpointSlices, r)
	in.ReplicaSets = shuffle(in.ReplicaSets, r)
	in.TrafficTargets = shuffle(in.TrafficTargets, r)
	in.TCPRoutes = shuffle(in.TCPRoutes, r)
	in.HTTPRouteGroups = shuffle(in.HTTPRouteGroups, r)
	return in
}

func shuffle[T any](s []T, r *rand.Rand) []T {
	s = slices.Clone(s)
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

// deepCopied returns in with every object copied, as a restarted operator's
// informers would hold them.
func deepCopied(in Inputs) Inputs {
	in.Namespaces = copyAll(in.Namespaces, (*corev1.Namespace).DeepCopy)
	in.Pods = copyAll(in.Pods, (*corev1.Pod).DeepCopy)
	in.Services = copyAll(in.Services, (*corev1.Service).DeepCopy)
	in.EndpointSlices = copyAll(in.EndpointSlices, (*discoveryv1.EndpointSlice).DeepCopy)
	in.ReplicaSets = copyAll(in.ReplicaSets, (*appsv1.ReplicaSet).DeepCopy)
	in.TrafficTargets = copyAll(in.TrafficTargets, (*accessv1alpha3.TrafficTarget).DeepCopy)
	in.TCPRoutes = copyAll(in.TCPRoutes, (*specsv1alpha4.TCPRoute).DeepCopy)
	in.HTTPRouteGroups = copyAll(in.HTTPRouteGroups, (*specsv1alpha4.HTTPRouteGroup).DeepCopy)
	return in
}

func copyAll[T any](s []T, cp func(T) T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[i] = cp(v)
	}
	return out
}

// checkSameOutput fails unless got and want are equal in every resource,
// version and condition.
func checkSameOutput(t testing.TB, got, want Output) {
	t.Helper()
	if got.SystemVersion != want.SystemVersion {
		t.Errorf("SystemVersion = %q, want %q", got.SystemVersion, want.SystemVersion)
	}
	if len(got.Resources) != len(want.Resources) {
		t.Fatalf("%d resources, want %d", len(got.Resources), len(want.Resources))
	}
	for i := range got.Resources {
		if !proto.Equal(got.Resources[i], want.Resources[i]) {
			t.Fatalf("resource %d:\n got  %s\n want %s", i, text(got.Resources[i]), text(want.Resources[i]))
		}
	}
	if len(got.Accepted) != len(want.Accepted) {
		t.Errorf("%d conditions, want %d", len(got.Accepted), len(want.Accepted))
	}
	for k, w := range want.Accepted {
		if g := got.Accepted[k]; g != w {
			t.Errorf("condition of %v = %+v, want %+v", k, g, w)
		}
	}
}

func TestDeterministic(t *testing.T) {
	in := clusterInputs(40, 5, 4, 12)
	want := Compile(in)
	checkNodeAccepts(t, want)
	if n := len(want.Resources); n != 200+40+12+1 {
		t.Fatalf("%d resources, want %d (200 workloads, 40 services, 12 policies, settings)", n, 200+40+12+1)
	}
	t.Run("shuffled inputs", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for range 5 {
			checkSameOutput(t, Compile(shuffled(in, r)), want)
		}
	})
	t.Run("restarted operator", func(t *testing.T) {
		checkSameOutput(t, Compile(deepCopied(in)), want)
	})
	t.Run("inputs are not modified", func(t *testing.T) {
		cp := deepCopied(in)
		Compile(in)
		if !reflect.DeepEqual(in, cp) {
			t.Error("Compile modified its inputs")
		}
	})
}

// TestVersions: a version follows its resource's content, and nothing
// else.
// change is one change to clusterInputs(40, 5, 4, 12).
type change struct {
	name string
	// change returns in changed; it must not modify in's objects.
	change func(in Inputs) Inputs
	// changed are the resources whose version must change (added ones
	// included); every other one must keep its version.
	changed []string
	removed []string
}

func changes(base Inputs) []change {
	return []change{
		{
			name: "unrelated pod added",
			change: func(in Inputs) Inputs {
				in.Pods = append(slices.Clone(in.Pods), pod("ns0", "extra", "extra-uid", "10.200.0.1"))
				return in
			},
			changed: []string{meshv1.WorkloadName("extra-uid")},
		},
		{
			name: "pod label changed",
			change: func(in Inputs) Inputs {
				in.Pods = slices.Clone(in.Pods)
				p := in.Pods[7].DeepCopy()
				p.Labels["version"] = "v2"
				in.Pods[7] = p
				return in
			},
			changed: []string{meshv1.WorkloadName(string(base.Pods[7].UID))},
		},
		{
			name: "pod deleted",
			change: func(in Inputs) Inputs {
				in.Pods = slices.Delete(slices.Clone(in.Pods), 7, 8)
				return in
			},
			removed: []string{meshv1.WorkloadName(string(base.Pods[7].UID))},
		},
		{
			name: "endpoint not ready",
			change: func(in Inputs) Inputs {
				in.EndpointSlices = slices.Clone(in.EndpointSlices)
				es := in.EndpointSlices[3].DeepCopy()
				es.Endpoints[0].Conditions.Ready = ptr(false)
				in.EndpointSlices[3] = es
				return in
			},
			changed: []string{meshv1.ServiceName(base.EndpointSlices[3].Namespace, base.EndpointSlices[3].Labels[discoveryv1.LabelServiceName])},
		},
		{
			name: "TrafficTarget source added",
			change: func(in Inputs) Inputs {
				in.TrafficTargets = slices.Clone(in.TrafficTargets)
				tt := in.TrafficTargets[2].DeepCopy()
				tt.Spec.Sources = append(tt.Spec.Sources, saIn("ns1", "newcomer"))
				in.TrafficTargets[2] = tt
				return in
			},
			changed: []string{meshv1.PolicyName(base.TrafficTargets[2].Namespace, base.TrafficTargets[2].Name)},
		},
		{
			name: "TCPRoute port changed",
			change: func(in Inputs) Inputs {
				in.TCPRoutes = slices.Clone(in.TCPRoutes)
				r := in.TCPRoutes[1].DeepCopy()
				r.Spec.Matches.Ports = []int32{8443}
				in.TCPRoutes[1] = r
				return in
			},
			changed: []string{meshv1.PolicyName(base.TrafficTargets[1].Namespace, base.TrafficTargets[1].Name)},
		},
		{
			name: "TrafficTarget status changed",
			change: func(in Inputs) Inputs {
				in.TrafficTargets = slices.Clone(in.TrafficTargets)
				tt := in.TrafficTargets[2].DeepCopy()
				tt.Status.SourcesSummary = "whatever"
				tt.ResourceVersion = "999"
				in.TrafficTargets[2] = tt
				return in
			},
		},
		{
			name: "trust bundle grows",
			change: func(in Inputs) Inputs {
				in.TrustBundlePEM = []byte("another root")
				return in
			},
			changed: []string{meshv1.SettingsName},
		},
		{
			name: "cluster domain changed",
			change: func(in Inputs) Inputs {
				in.ClusterDomain = "corp.example"
				return in
			},
			changed: func() []string {
				var ss []string
				for _, s := range base.Services {
					ss = append(ss, meshv1.ServiceName(s.Namespace, s.Name))
				}
				return ss
			}(),
		},
		{
			name: "ReplicaSet adopted by another Deployment",
			change: func(in Inputs) Inputs {
				in.ReplicaSets = slices.Clone(in.ReplicaSets)
				rs := in.ReplicaSets[2]
				in.ReplicaSets[2] = replicaSet(rs.Namespace, rs.Name, "adopter")
				return in
			},
			changed: func() []string {
				var ws []string
				for _, p := range base.Pods {
					if ref := p.OwnerReferences[0]; ref.Name == base.ReplicaSets[2].Name && p.Namespace == base.ReplicaSets[2].Namespace {
						ws = append(ws, meshv1.WorkloadName(string(p.UID)))
					}
				}
				return ws
			}(),
		},
		{
			name: "pod becomes dual-stack",
			change: func(in Inputs) Inputs {
				in.Pods = slices.Clone(in.Pods)
				p := in.Pods[0].DeepCopy()
				p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::1"})
				in.Pods[0] = p
				return in
			},
			changed: []string{meshv1.WorkloadName(string(base.Pods[0].UID))},
		},
		{
			// After the previous change (in TestCompiler) the old pod keeps
			// its IPv6 address and its endpoint no longer names it; on its
			// own (in TestVersions) the old pod has no address left.
			name: "IP taken by a newer pod before the old one is seen gone",
			change: func(in Inputs) Inputs {
				in.Pods = append(slices.Clone(in.Pods), pod(base.Pods[0].Namespace, "newer", "newer-uid", base.Pods[0].Status.PodIP,
					func(p *corev1.Pod) { p.CreationTimestamp = age(100) }))
				return in
			},
			changed: []string{meshv1.WorkloadName("newer-uid")},
			removed: []string{meshv1.WorkloadName(string(base.Pods[0].UID))},
		},
		{
			name: "namespace enrolled",
			change: func(in Inputs) Inputs {
				in.Namespaces = slices.Clone(in.Namespaces)
				in.Namespaces[1] = meshedNS(in.Namespaces[1].Name)
				return in
			},
			changed: func() []string {
				var ws []string
				for _, p := range base.Pods {
					if p.Namespace == base.Namespaces[1].Name {
						ws = append(ws, meshv1.WorkloadName(string(p.UID)))
					}
				}
				return ws
			}(),
		},
	}
}

func TestVersions(t *testing.T) {
	base := clusterInputs(40, 5, 4, 12)
	before := Compile(base)
	for _, tt := range changes(base) {
		t.Run(tt.name, func(t *testing.T) {
			after := Compile(tt.change(base))
			checkNodeAccepts(t, after)
			old := make(map[string]string, len(before.Resources))
			for _, r := range before.Resources {
				old[r.Name] = r.Version
			}
			seen := map[string]bool{}
			for _, r := range after.Resources {
				seen[r.Name] = true
				v, had := old[r.Name]
				switch want := slices.Contains(tt.changed, r.Name); {
				case want && had && v == r.Version:
					t.Errorf("%s kept version %q, want a new one", r.Name, v)
				case !want && !had:
					t.Errorf("%s appeared, want only %q changed", r.Name, tt.changed)
				case !want && v != r.Version:
					t.Errorf("%s version %q → %q, want it unchanged", r.Name, v, r.Version)
				}
			}
			for _, r := range before.Resources {
				if !seen[r.Name] && !slices.Contains(tt.removed, r.Name) {
					t.Errorf("%s disappeared", r.Name)
				}
			}
			for _, n := range tt.removed {
				if seen[n] {
					t.Errorf("%s still there, want it removed", n)
				}
			}
			if changed := len(tt.changed)+len(tt.removed) > 0; changed == (after.SystemVersion == before.SystemVersion) {
				t.Errorf("SystemVersion %q → %q with changes %q %q", before.SystemVersion, after.SystemVersion, tt.changed, tt.removed)
			}
		})
	}
}

// TestCompiler: a Compiler fed one change after another gives what
// Compile gives from scratch, and hands back the very resources that did
// not change.
func TestCompiler(t *testing.T) {
	in := clusterInputs(40, 5, 4, 12)
	var c Compiler
	prev := c.Compile(in)
	checkSameOutput(t, prev, Compile(in))
	for _, ch := range changes(in) {
		t.Run(ch.name, func(t *testing.T) {
			in = ch.change(in)
			got := c.Compile(in)
			checkSameOutput(t, got, Compile(in))
			old := make(map[string]*meshv1.Resource, len(prev.Resources))
			for _, r := range prev.Resources {
				old[r.Name] = r
			}
			for _, r := range got.Resources {
				if o := old[r.Name]; o != nil && o.Version == r.Version && o != r && r.GetPolicy() == nil && r.GetSettings() == nil {
					t.Errorf("%s unchanged but compiled anew", r.Name)
				}
			}
			prev = got
		})
	}
	t.Run("object modified in place with a new ResourceVersion", func(t *testing.T) {
		p := in.Pods[3]
		p.Labels = map[string]string{"app": "renamed"}
		p.ResourceVersion = "changed"
		got := c.Compile(in)
		checkSameOutput(t, got, Compile(in))
		if w := resource(got, meshv1.WorkloadName(string(p.UID))).GetWorkload(); w.GetApp() != "renamed" {
			t.Errorf("app of the changed pod = %q, want renamed", w.GetApp())
		}
	})
	t.Run("forgets what it no longer sees", func(t *testing.T) {
		c.Compile(Inputs{})
		if len(c.pods) != 0 || len(c.services) != 0 {
			t.Errorf("after an empty compile the Compiler holds %d pods and %d services, want none", len(c.pods), len(c.services))
		}
	})
}

// TestCompileConcurrent: Compile only reads its inputs, so compilations
// may share them (run with -race to make this test meaningful).
func TestCompileConcurrent(t *testing.T) {
	in := clusterInputs(20, 3, 2, 6)
	want := Compile(in)
	outs := make(chan Output, 4)
	for range cap(outs) {
		go func() { outs <- Compile(in) }()
	}
	for range cap(outs) {
		checkSameOutput(t, <-outs, want)
	}
}
