package compile

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	"github.com/weftmesh/weft/internal/spiffe"
)

// epoch is the creation time of test objects; age(n) is n seconds later.
var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func age(n int) metav1.Time { return metav1.NewTime(epoch.Add(time.Duration(n) * time.Second)) }

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func meshedNS(name string) *corev1.Namespace {
	return namespace(name, map[string]string{MeshLabel: MeshEnabled})
}

// pod is a running pod with one IP on node-a; opts adjust it.
func pod(ns, name, uid, ip string, opts ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), CreationTimestamp: age(0)},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: name + "-sa"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func labels(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

func ownedBy(kind, name string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.OwnerReferences = []metav1.OwnerReference{controllerRef(kind, name)} }
}

func controllerRef(kind, name string) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: kind, Name: name, UID: types.UID("uid-" + name), Controller: &yes}
}

func replicaSet(ns, name, deployment string) *appsv1.ReplicaSet {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)}}
	if deployment != "" {
		rs.OwnerReferences = []metav1.OwnerReference{controllerRef("Deployment", deployment)}
	}
	return rs
}

// service is a ClusterIP Service; ports are "name:port:target" with target a
// number, a name or "" (unset).
func service(ns, name, clusterIP string, ports ...string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("svc-" + ns + "-" + name), CreationTimestamp: age(0)},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP},
	}
	if clusterIP != "" && clusterIP != corev1.ClusterIPNone {
		s.Spec.ClusterIPs = []string{clusterIP}
	}
	for _, spec := range ports {
		parts := strings.Split(spec, ":")
		sp := corev1.ServicePort{Name: parts[0], Protocol: corev1.ProtocolTCP}
		fmt.Sscan(parts[1], &sp.Port)
		if t := parts[2]; t != "" {
			var n int32
			if _, err := fmt.Sscan(t, &n); err == nil {
				sp.TargetPort = intstr.FromInt32(n)
			} else {
				sp.TargetPort = intstr.FromString(t)
			}
		}
		s.Spec.Ports = append(s.Spec.Ports, sp)
	}
	return s
}

// slice is an IPv4 EndpointSlice of Service svc; ports are "name:port".
func slice(ns, svc, name string, ports []string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
	}
	for _, spec := range ports {
		n, p, _ := strings.Cut(spec, ":")
		var port int32
		fmt.Sscan(p, &port)
		tcp := corev1.ProtocolTCP
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: &n, Port: &port, Protocol: &tcp})
	}
	return es
}

// ep is an endpoint of pod uid ("" for none); ready nil means unknown.
func ep(addr, uid string, ready *bool) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	if uid != "" {
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", UID: types.UID(uid)}
	}
	return e
}

func ptr[T any](v T) *T { return &v }

func sa(name string) accessv1alpha3.IdentityBindingSubject {
	return accessv1alpha3.IdentityBindingSubject{Kind: accessv1alpha3.KindServiceAccount, Name: name}
}

func saIn(ns, name string) accessv1alpha3.IdentityBindingSubject {
	s := sa(name)
	s.Namespace = ns
	return s
}

func rule(kind accessv1alpha3.RuleKind, name string, matches ...string) accessv1alpha3.TrafficTargetRule {
	return accessv1alpha3.TrafficTargetRule{Kind: kind, Name: name, Matches: matches}
}

func target(ns, name string, dst accessv1alpha3.IdentityBindingSubject, srcs []accessv1alpha3.IdentityBindingSubject, rules ...accessv1alpha3.TrafficTargetRule) *accessv1alpha3.TrafficTarget {
	return &accessv1alpha3.TrafficTarget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("tt-" + ns + "-" + name), Generation: 3},
		Spec:       accessv1alpha3.TrafficTargetSpec{Destination: dst, Sources: srcs, Rules: rules},
	}
}

func tcpRoute(ns, name, match string, ports ...int32) *specsv1alpha4.TCPRoute {
	return &specsv1alpha4.TCPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("tr-" + ns + "-" + name)},
		Spec:       specsv1alpha4.TCPRouteSpec{Matches: specsv1alpha4.TCPMatch{Name: match, Ports: ports}},
	}
}

func routeGroup(ns, name string, matches ...specsv1alpha4.HTTPMatch) *specsv1alpha4.HTTPRouteGroup {
	return &specsv1alpha4.HTTPRouteGroup{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("htr-" + ns + "-" + name)},
		Spec:       specsv1alpha4.HTTPRouteGroupSpec{Matches: matches},
	}
}

// resource returns the resource named name of out, or nil.
func resource(out Output, name string) *meshv1.Resource {
	for _, r := range out.Resources {
		if r.Name == name {
			return r
		}
	}
	return nil
}

func names(out Output) []string {
	var ns []string
	for _, r := range out.Resources {
		ns = append(ns, r.Name)
	}
	return ns
}

func text(m proto.Message) string {
	if m == nil || !m.ProtoReflect().IsValid() {
		return "<none>"
	}
	return prototext.MarshalOptions{Multiline: false}.Format(m)
}

// checkEqual fails when got and want differ, printing both.
func checkEqual(t testing.TB, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", what, text(got), text(want))
	}
}

// checkNodeAccepts fails when out holds anything a node proxy refuses
// (ztunnel/state.Snapshot.Validate, restated here: components never import
// each other) or that breaks the stream protocol (names unique, sorted and
// matching their bodies, versions set).
func checkNodeAccepts(t testing.TB, out Output) {
	t.Helper()
	td := spiffe.DefaultTrustDomain
	ipOwner := map[netip.Addr]string{}
	wlIPs := map[string][]netip.Addr{}
	vipPorts := map[netip.AddrPort]string{}
	policies := map[string]bool{}
	settings := 0
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("node would refuse the set: "+format, args...)
	}
	addr := func(what, s string) netip.Addr {
		t.Helper()
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a != a.Unmap() {
			fail("%s: address %q", what, s)
		}
		return a
	}
	for i, r := range out.Resources {
		if !meshv1.NameMatchesBody(r) || r.Version == "" {
			fail("resource %q (version %q) is malformed", r.Name, r.Version)
		}
		if i > 0 && out.Resources[i-1].Name >= r.Name {
			fail("resources not sorted by name, or a name twice: %q then %q", out.Resources[i-1].Name, r.Name)
		}
		if s := r.GetSettings(); s != nil {
			settings++
			td = s.TrustDomain
			if s.PolicyMode != ModePermissive && s.PolicyMode != ModeStrict {
				fail("policy mode %q", s.PolicyMode)
			}
		}
	}
	if settings != 1 {
		fail("%d settings resources, want 1", settings)
	}
	for _, r := range out.Resources {
		w := r.GetWorkload()
		if w == nil {
			continue
		}
		if _, err := spiffe.NewID(td, w.Namespace, w.ServiceAccount); err != nil || w.Uid == "" || w.Name == "" {
			fail("workload %s: uid %q name %q identity: %v", r.Name, w.Uid, w.Name, err)
		}
		if w.Protocol != ProtocolHBONE && w.Protocol != ProtocolTCP {
			fail("workload %s: protocol %q", r.Name, w.Protocol)
		}
		if len(w.Ips) == 0 {
			fail("workload %s: no ips", r.Name)
		}
		for _, s := range w.Ips {
			a := addr("workload "+r.Name, s)
			if o, ok := ipOwner[a]; ok {
				fail("ip %v of workloads %s and %s", a, o, r.Name)
			}
			ipOwner[a] = r.Name
			wlIPs[w.Uid] = append(wlIPs[w.Uid], a)
		}
	}
	for _, r := range out.Resources {
		s := r.GetService()
		if s == nil {
			continue
		}
		ports := map[uint32]bool{}
		for _, p := range s.Ports {
			if p.Port < 1 || p.Port > 65535 || p.TargetPort > 65535 || ports[p.Port] {
				fail("service %s: port %d (target %d) bad or twice", r.Name, p.Port, p.TargetPort)
			}
			ports[p.Port] = true
		}
		for _, v := range s.Vips {
			a := addr("service "+r.Name, v)
			if o, ok := ipOwner[a]; ok {
				fail("vip %v of service %s is an ip of %s", a, r.Name, o)
			}
			for p := range ports {
				k := netip.AddrPortFrom(a, uint16(p))
				if o, ok := vipPorts[k]; ok {
					fail("%v of services %s and %s", k, o, r.Name)
				}
				vipPorts[k] = r.Name
			}
		}
		for _, e := range s.Endpoints {
			a := addr("endpoint of "+r.Name, e.Address)
			for from, to := range e.Ports {
				if from < 1 || from > 65535 || to < 1 || to > 65535 {
					fail("service %s: endpoint %v: mapping %d→%d", r.Name, a, from, to)
				}
			}
			if ips, ok := wlIPs[e.WorkloadUid]; e.WorkloadUid != "" && ok {
				found := false
				for _, ip := range ips {
					found = found || ip == a
				}
				if !found {
					fail("service %s: endpoint %v names workload %s without that ip", r.Name, a, e.WorkloadUid)
				}
			}
		}
	}
	for _, r := range out.Resources {
		p := r.GetPolicy()
		if p == nil {
			continue
		}
		if p.Name == "" || policies[p.Name] || p.Destination.GetNamespace() == "" || p.Destination.GetServiceAccount() == "" {
			fail("policy %s: name %q (twice: %v), destination %v", r.Name, p.Name, policies[p.Name], p.Destination)
		}
		policies[p.Name] = true
		for _, src := range p.Sources {
			id, err := spiffe.ParseID(src)
			if err != nil || id.TrustDomain != td {
				fail("policy %s: source %q not a SPIFFE ID of %s: %v", r.Name, src, td, err)
			}
		}
		for _, rl := range p.Rules {
			if rl.Kind == "" {
				fail("policy %s: rule without kind", r.Name)
			}
			for _, port := range rl.Ports {
				if port < 1 || port > 65535 {
					fail("policy %s: rule port %d", r.Name, port)
				}
			}
		}
	}
}
