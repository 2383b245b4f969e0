package compile

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

func TestWorkloads(t *testing.T) {
	now := metav1.Now()
	// base is the Workload of pod("shop", "cart", "u1", "10.1.0.5") in an
	// unmeshed namespace; cases adjust a copy.
	base := func(f ...func(*meshv1.Workload)) *meshv1.Workload {
		w := &meshv1.Workload{
			Uid: "u1", Namespace: "shop", Name: "cart", ServiceAccount: "cart-sa", Node: "node-a",
			Ips: []string{"10.1.0.5"}, Protocol: ProtocolTCP, WorkloadName: "cart",
		}
		for _, fn := range f {
			fn(w)
		}
		return w
	}
	hbone := func(w *meshv1.Workload) { w.Protocol = ProtocolHBONE }

	tests := []struct {
		name        string
		namespaces  []*corev1.Namespace
		exclude     []string
		replicaSets []*appsv1.ReplicaSet
		pods        []*corev1.Pod
		// want maps each UID to its Workload; a UID mapped to nil must be
		// absent.
		want map[string]*meshv1.Workload
	}{
		{
			name:       "pod in meshed namespace is HBONE",
			namespaces: []*corev1.Namespace{meshedNS("shop")},
			pods:       []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5")},
			want:       map[string]*meshv1.Workload{"u1": base(hbone)},
		},
		{
			name:       "pod in unlabelled namespace is TCP",
			namespaces: []*corev1.Namespace{namespace("shop", nil)},
			pods:       []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5")},
			want:       map[string]*meshv1.Workload{"u1": base()},
		},
		{
			name:       "namespace labelled other than enabled is TCP",
			namespaces: []*corev1.Namespace{namespace("shop", map[string]string{MeshLabel: "true"})},
			pods:       []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5")},
			want:       map[string]*meshv1.Workload{"u1": base()},
		},
		{
			name: "pod of a namespace not in the cache is TCP",
			pods: []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5")},
			want: map[string]*meshv1.Workload{"u1": base()},
		},
		{
			name:       "pod opted out is TCP",
			namespaces: []*corev1.Namespace{meshedNS("shop")},
			pods:       []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5", labels(MeshLabel, MeshDisabled))},
			want:       map[string]*meshv1.Workload{"u1": base()},
		},
		{
			name:       "kube-system is never meshed",
			namespaces: []*corev1.Namespace{meshedNS("kube-system")},
			pods:       []*corev1.Pod{pod("kube-system", "cart", "u1", "10.1.0.5")},
			want:       map[string]*meshv1.Workload{"u1": base(func(w *meshv1.Workload) { w.Namespace = "kube-system" })},
		},
		{
			name:       "excluded namespace is never meshed",
			namespaces: []*corev1.Namespace{meshedNS("shop"), meshedNS("weft-system")},
			exclude:    []string{"weft-system"},
			pods:       []*corev1.Pod{pod("weft-system", "cart", "u1", "10.1.0.5"), pod("shop", "cart", "u2", "10.1.0.6")},
			want: map[string]*meshv1.Workload{
				"u1": base(func(w *meshv1.Workload) { w.Namespace = "weft-system" }),
				"u2": base(hbone, func(w *meshv1.Workload) { w.Uid = "u2"; w.Ips = []string{"10.1.0.6"} }),
			},
		},
		{
			name:       "host-network pod is skipped",
			namespaces: []*corev1.Namespace{meshedNS("shop")},
			pods:       []*corev1.Pod{pod("shop", "cart", "u1", "192.168.0.10", func(p *corev1.Pod) { p.Spec.HostNetwork = true })},
			want:       map[string]*meshv1.Workload{"u1": nil},
		},
		{
			name:       "pod without IP is skipped",
			namespaces: []*corev1.Namespace{meshedNS("shop")},
			pods:       []*corev1.Pod{pod("shop", "cart", "u1", "", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })},
			want:       map[string]*meshv1.Workload{"u1": nil},
		},
		{
			name:       "pod with an unparsable IP is skipped",
			namespaces: []*corev1.Namespace{meshedNS("shop")},
			pods:       []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.300"), pod("shop", "b", "u2", "0.0.0.0")},
			want:       map[string]*meshv1.Workload{"u1": nil, "u2": nil},
		},
		{
			name:       "deleted pod is skipped",
			namespaces: []*corev1.Namespace{meshedNS("shop")},
			pods:       []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5", func(p *corev1.Pod) { p.DeletionTimestamp = &now })},
			want:       map[string]*meshv1.Workload{"u1": nil},
		},
		{
			name:       "finished pods are skipped",
			namespaces: []*corev1.Namespace{meshedNS("shop")},
			pods: []*corev1.Pod{
				pod("shop", "job", "u1", "10.1.0.5", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
				pod("shop", "crash", "u2", "10.1.0.6", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
			},
			want: map[string]*meshv1.Workload{"u1": nil, "u2": nil},
		},
		{
			name: "Deployment name through the ReplicaSet",
			replicaSets: []*appsv1.ReplicaSet{
				replicaSet("shop", "cart-7d9f8", "cart"),
				replicaSet("other", "cart-7d9f8", "wrong-namespace"),
			},
			pods: []*corev1.Pod{pod("shop", "cart-7d9f8-abcde", "u1", "10.1.0.5", ownedBy("ReplicaSet", "cart-7d9f8"), labels("pod-template-hash", "7d9f8"))},
			want: map[string]*meshv1.Workload{"u1": base(func(w *meshv1.Workload) {
				w.Name, w.ServiceAccount, w.WorkloadName = "cart-7d9f8-abcde", "cart-7d9f8-abcde-sa", "cart"
			})},
		},
		{
			name: "Deployment name from pod-template-hash while the ReplicaSet is not cached",
			pods: []*corev1.Pod{pod("shop", "cart-7d9f8-abcde", "u1", "10.1.0.5", ownedBy("ReplicaSet", "cart-7d9f8"), labels("pod-template-hash", "7d9f8"))},
			want: map[string]*meshv1.Workload{"u1": base(func(w *meshv1.Workload) {
				w.Name, w.ServiceAccount, w.WorkloadName = "cart-7d9f8-abcde", "cart-7d9f8-abcde-sa", "cart"
			})},
		},
		{
			name:        "ReplicaSet without a Deployment names itself",
			replicaSets: []*appsv1.ReplicaSet{replicaSet("shop", "cart-rs", "")},
			pods:        []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5", ownedBy("ReplicaSet", "cart-rs"))},
			want:        map[string]*meshv1.Workload{"u1": base(func(w *meshv1.Workload) { w.WorkloadName = "cart-rs" })},
		},
		{
			name: "other controller names itself",
			pods: []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5", ownedBy("StatefulSet", "db"))},
			want: map[string]*meshv1.Workload{"u1": base(func(w *meshv1.Workload) { w.WorkloadName = "db" })},
		},
		{
			name: "owner that is not the controller is ignored",
			pods: []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5", func(p *corev1.Pod) {
				p.OwnerReferences = []metav1.OwnerReference{{Kind: "StatefulSet", Name: "db"}}
			})},
			want: map[string]*meshv1.Workload{"u1": base()},
		},
		{
			name: "app and version labels",
			pods: []*corev1.Pod{
				pod("shop", "cart", "u1", "10.1.0.5", labels("app", "cart", "version", "v2", "app.kubernetes.io/name", "ignored")),
				pod("shop", "cart", "u2", "10.1.0.6", labels("app.kubernetes.io/name", "cart", "app.kubernetes.io/version", "v3",
					"service.istio.io/canonical-name", "cart-svc", "service.istio.io/canonical-revision", "r3")),
			},
			want: map[string]*meshv1.Workload{
				"u1": base(func(w *meshv1.Workload) { w.App, w.Version = "cart", "v2" }),
				"u2": base(func(w *meshv1.Workload) {
					w.Uid, w.Ips = "u2", []string{"10.1.0.6"}
					w.App, w.Version, w.CanonicalService, w.CanonicalRevision = "cart", "v3", "cart-svc", "r3"
				}),
			},
		},
		{
			name: "no ServiceAccount is default",
			pods: []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" })},
			want: map[string]*meshv1.Workload{"u1": base(func(w *meshv1.Workload) { w.ServiceAccount = "default" })},
		},
		{
			name: "dual stack keeps every IP, IPv4-mapped unmapped",
			pods: []*corev1.Pod{pod("shop", "cart", "u1", "::ffff:10.1.0.5", func(p *corev1.Pod) {
				p.Status.PodIPs = []corev1.PodIP{{IP: "::ffff:10.1.0.5"}, {IP: "fd00::5"}, {IP: "10.1.0.5"}}
			})},
			want: map[string]*meshv1.Workload{"u1": base(func(w *meshv1.Workload) { w.Ips = []string{"10.1.0.5", "fd00::5"} })},
		},
		{
			name: "an IP reused before the old pod was seen gone belongs to the newer pod",
			pods: []*corev1.Pod{
				pod("shop", "old", "u1", "10.1.0.5", func(p *corev1.Pod) { p.CreationTimestamp = age(1) }),
				pod("shop", "cart", "u2", "10.1.0.5", func(p *corev1.Pod) { p.CreationTimestamp = age(2) }),
			},
			want: map[string]*meshv1.Workload{
				"u1": nil,
				"u2": base(func(w *meshv1.Workload) { w.Uid = "u2" }),
			},
		},
		{
			name: "a dual-stack pod that loses one IP keeps the other",
			pods: []*corev1.Pod{
				pod("shop", "cart", "u1", "10.1.0.5", func(p *corev1.Pod) {
					p.CreationTimestamp = age(1)
					p.Status.PodIPs = []corev1.PodIP{{IP: "10.1.0.5"}, {IP: "fd00::5"}}
				}),
				pod("shop", "new", "u2", "10.1.0.5", func(p *corev1.Pod) { p.CreationTimestamp = age(2) }),
			},
			want: map[string]*meshv1.Workload{
				"u1": base(func(w *meshv1.Workload) { w.Ips = []string{"fd00::5"} }),
				"u2": base(func(w *meshv1.Workload) {
					w.Uid, w.Name, w.ServiceAccount, w.WorkloadName = "u2", "new", "new-sa", "new"
				}),
			},
		},
		{
			name: "pod whose ServiceAccount cannot be a SPIFFE segment is skipped",
			pods: []*corev1.Pod{pod("shop", "cart", "u1", "10.1.0.5", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "Cart" })},
			want: map[string]*meshv1.Workload{"u1": nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Compile(Inputs{Namespaces: tt.namespaces, Pods: tt.pods, ReplicaSets: tt.replicaSets, ExcludeNamespaces: tt.exclude})
			checkNodeAccepts(t, out)
			for uid, want := range tt.want {
				r := resource(out, meshv1.WorkloadName(uid))
				switch {
				case want == nil && r != nil:
					t.Errorf("workload %s = %s, want none", uid, text(r.GetWorkload()))
				case want != nil && r == nil:
					t.Errorf("workload %s missing; resources %q", uid, names(out))
				case want != nil:
					checkEqual(t, "workload "+uid, r.GetWorkload(), want)
				}
			}
		})
	}
}
