package compile

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

func TestServices(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	// Pods p1..p3 at 10.1.0.1..3 back the Services below.
	pods := []*corev1.Pod{
		pod("shop", "p1", "p1", "10.1.0.1"),
		pod("shop", "p2", "p2", "10.1.0.2"),
		pod("shop", "p3", "p3", "10.1.0.3"),
	}
	svc := func(ports []*meshv1.ServicePort, eps ...*meshv1.Endpoint) *meshv1.Service {
		return &meshv1.Service{
			Namespace: "shop", Name: "web", Hostname: "web.shop.svc.cluster.local",
			Vips: []string{"10.96.0.10"}, Ports: ports, Endpoints: eps,
		}
	}
	port := func(name string, p, target uint32) *meshv1.ServicePort {
		return &meshv1.ServicePort{Name: name, Port: p, TargetPort: target}
	}
	endpoint := func(addr, uid string, ready bool, ports ...uint32) *meshv1.Endpoint {
		e := &meshv1.Endpoint{Address: addr, WorkloadUid: uid, Ready: ready}
		for i := 0; i+1 < len(ports); i += 2 {
			if e.Ports == nil {
				e.Ports = map[uint32]uint32{}
			}
			e.Ports[ports[i]] = ports[i+1]
		}
		return e
	}

	tests := []struct {
		name     string
		domain   string
		services []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		// want maps namespace/name to the Service; nil: must be absent.
		want map[string]*meshv1.Service
	}{
		{
			name:     "numeric and unset target ports",
			services: []*corev1.Service{service("shop", "web", "10.96.0.10", "http:80:8080", "metrics:9090:")},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "web", "web-1", []string{"http:8080", "metrics:9090"}, ep("10.1.0.1", "p1", yes)),
			},
			want: map[string]*meshv1.Service{"shop/web": svc(
				[]*meshv1.ServicePort{port("http", 80, 8080), port("metrics", 9090, 9090)},
				endpoint("10.1.0.1", "p1", true))},
		},
		{
			name:     "named target port that every endpoint serves on one number",
			services: []*corev1.Service{service("shop", "web", "10.96.0.10", "http:80:web")},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "web", "web-1", []string{"http:8080"}, ep("10.1.0.1", "p1", yes), ep("10.1.0.2", "p2", yes)),
			},
			want: map[string]*meshv1.Service{"shop/web": svc(
				[]*meshv1.ServicePort{port("http", 80, 8080)},
				endpoint("10.1.0.1", "p1", true), endpoint("10.1.0.2", "p2", true))},
		},
		{
			name:     "named target port resolved per endpoint across slices",
			services: []*corev1.Service{service("shop", "web", "10.96.0.10", "http:80:web", "admin:81:9000")},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "web", "web-b", []string{"http:8081", "admin:9000"}, ep("10.1.0.2", "p2", yes)),
				slice("shop", "web", "web-a", []string{"http:8080", "admin:9000"}, ep("10.1.0.1", "p1", yes), ep("10.1.0.3", "p3", yes)),
			},
			want: map[string]*meshv1.Service{"shop/web": svc(
				[]*meshv1.ServicePort{port("http", 80, 0), port("admin", 81, 9000)},
				endpoint("10.1.0.1", "p1", true, 80, 8080),
				endpoint("10.1.0.2", "p2", true, 80, 8081),
				endpoint("10.1.0.3", "p3", true, 80, 8080))},
		},
		{
			name:     "readiness from endpoint conditions",
			services: []*corev1.Service{service("shop", "web", "10.96.0.10", "http:80:8080")},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "web", "web-1", []string{"http:8080"},
					ep("10.1.0.1", "p1", yes), ep("10.1.0.2", "p2", no), ep("10.1.0.3", "p3", nil)),
			},
			want: map[string]*meshv1.Service{"shop/web": svc(
				[]*meshv1.ServicePort{port("http", 80, 8080)},
				endpoint("10.1.0.1", "p1", true), endpoint("10.1.0.2", "p2", false), endpoint("10.1.0.3", "p3", true))},
		},
		{
			name:     "an address in two slices is one endpoint, ready if either says so",
			services: []*corev1.Service{service("shop", "web", "10.96.0.10", "http:80:8080")},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "web", "web-1", []string{"http:8080"}, ep("10.1.0.1", "p1", no)),
				slice("shop", "web", "web-2", []string{"http:8080"}, ep("10.1.0.1", "p1", yes)),
			},
			want: map[string]*meshv1.Service{"shop/web": svc(
				[]*meshv1.ServicePort{port("http", 80, 8080)}, endpoint("10.1.0.1", "p1", true))},
		},
		{
			name: "slices of other Services and namespaces, and FQDN slices, are not endpoints",
			services: []*corev1.Service{
				service("shop", "web", "10.96.0.10", "http:80:8080"),
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "api", "api-1", []string{"http:8080"}, ep("10.1.0.2", "p2", yes)),
				slice("other", "web", "web-1", []string{"http:8080"}, ep("10.1.0.3", "p3", yes)),
				func() *discoveryv1.EndpointSlice {
					es := slice("shop", "web", "web-fqdn", []string{"http:8080"}, ep("db.example.com", "", yes))
					es.AddressType = discoveryv1.AddressTypeFQDN
					return es
				}(),
				slice("shop", "web", "web-1", []string{"http:8080"}, ep("10.1.0.1", "p1", yes)),
			},
			want: map[string]*meshv1.Service{"shop/web": svc(
				[]*meshv1.ServicePort{port("http", 80, 8080)}, endpoint("10.1.0.1", "p1", true))},
		},
		{
			name: "endpoint of a pod without that IP names no workload; an unknown pod keeps its UID",
			services: []*corev1.Service{
				service("shop", "web", "10.96.0.10", "http:80:8080"),
			},
			slices: []*discoveryv1.EndpointSlice{
				slice("shop", "web", "web-1", []string{"http:8080"},
					ep("10.1.0.1", "gone", yes), ep("10.1.0.9", "p2", yes), ep("192.168.0.7", "", yes)),
			},
			want: map[string]*meshv1.Service{"shop/web": svc(
				[]*meshv1.ServicePort{port("http", 80, 8080)},
				endpoint("10.1.0.1", "gone", true), endpoint("10.1.0.9", "", true), endpoint("192.168.0.7", "", true))},
		},
		{
			name: "headless, ExternalName and IP-less Services are skipped",
			services: []*corev1.Service{
				service("shop", "headless", corev1.ClusterIPNone, "http:80:8080"),
				func() *corev1.Service {
					s := service("shop", "ext", "", "http:80:8080")
					s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
					return s
				}(),
				service("shop", "pending", "", "http:80:8080"),
			},
			want: map[string]*meshv1.Service{"shop/headless": nil, "shop/ext": nil, "shop/pending": nil},
		},
		{
			name: "UDP ports are skipped",
			services: []*corev1.Service{func() *corev1.Service {
				s := service("shop", "web", "10.96.0.10", "dns:53:53", "dns-tcp:53:53")
				s.Spec.Ports[0].Protocol = corev1.ProtocolUDP
				return s
			}()},
			want: map[string]*meshv1.Service{"shop/web": svc([]*meshv1.ServicePort{port("dns-tcp", 53, 53)})},
		},
		{
			name:     "cluster domain in the hostname",
			domain:   "corp.example",
			services: []*corev1.Service{service("shop", "web", "10.96.0.10", "http:80:8080")},
			want: map[string]*meshv1.Service{"shop/web": func() *meshv1.Service {
				s := svc([]*meshv1.ServicePort{port("http", 80, 8080)})
				s.Hostname = "web.shop.svc.corp.example"
				return s
			}()},
		},
		{
			name: "a VIP shared through a stale cache stays with the newer Service",
			services: []*corev1.Service{
				func() *corev1.Service {
					s := service("shop", "old", "10.96.0.10", "http:80:8080")
					s.CreationTimestamp = age(1)
					return s
				}(),
				func() *corev1.Service {
					s := service("shop", "web", "10.96.0.10", "http:80:8080")
					s.CreationTimestamp = age(2)
					return s
				}(),
			},
			want: map[string]*meshv1.Service{
				"shop/old": nil,
				"shop/web": svc([]*meshv1.ServicePort{port("http", 80, 8080)}),
			},
		},
		{
			name:     "a VIP that is a pod IP is dropped",
			services: []*corev1.Service{service("shop", "web", "10.1.0.1", "http:80:8080")},
			want:     map[string]*meshv1.Service{"shop/web": nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Compile(Inputs{Pods: pods, Services: tt.services, EndpointSlices: tt.slices, ClusterDomain: tt.domain})
			checkNodeAccepts(t, out)
			for name, want := range tt.want {
				r := resource(out, meshv1.ServicePrefix+name)
				switch {
				case want == nil && r != nil:
					t.Errorf("service %s = %s, want none", name, text(r.GetService()))
				case want != nil && r == nil:
					t.Errorf("service %s missing; resources %q", name, names(out))
				case want != nil:
					checkEqual(t, "service "+name, r.GetService(), want)
				}
			}
		})
	}
}

// TestServiceDeletedSliceIgnored: a slice being deleted no longer
// contributes endpoints.
func TestServiceDeletedSliceIgnored(t *testing.T) {
	now := metav1.Now()
	es := slice("shop", "web", "web-1", []string{"http:8080"}, ep("10.1.0.1", "", ptr(true)))
	es.DeletionTimestamp = &now
	out := Compile(Inputs{Services: []*corev1.Service{service("shop", "web", "10.96.0.10", "http:80:8080")}, EndpointSlices: []*discoveryv1.EndpointSlice{es}})
	r := resource(out, meshv1.ServiceName("shop", "web"))
	if got := len(r.GetService().GetEndpoints()); got != 0 {
		t.Errorf("endpoints of shop/web = %d, want 0: %s", got, text(r.GetService()))
	}
}
