package compile

import (
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

// Pod labels read for telemetry (Istio's, ARCHITECTURE.md §7).
const (
	labelCanonicalName     = "service.istio.io/canonical-name"
	labelCanonicalRevision = "service.istio.io/canonical-revision"
	// labelPodTemplateHash is set by the Deployment controller on its
	// ReplicaSets' pods; the ReplicaSet is named <deployment>-<hash>.
	labelPodTemplateHash = "pod-template-hash"
)

// workloadSet is the compiled workloads, sorted by UID, and the addresses
// they own.
type workloadSet struct {
	list  []*workload
	byUID map[string]*workload
	byIP  map[addrKey]*workload
}

type workload struct {
	pod  *corev1.Pod
	memo *podMemo
	ips  []netip.Addr // owned by this workload alone
}

// podMemo is what a Compiler remembers of one pod between compilations.
type podMemo struct {
	gen    uint64 // of the last Compile that saw the pod
	pod    *corev1.Pod
	rv     string
	claims []netip.Addr // the addresses the pod claims; nil: no workload

	// res is the pod's last compiled resource (nil: none yet), built from
	// pod and the values below, which come from other objects.
	res          *meshv1.Resource
	protocol     string
	workloadName string
	ips          []netip.Addr
}

// podMemo returns p's memo, reset when p is not the object it was
// computed from.
func (m *Compiler) podMemo(p *corev1.Pod) *podMemo {
	e := m.pods[p.UID]
	if e == nil || e.pod != p || e.rv != p.ResourceVersion {
		e = &podMemo{pod: p, rv: p.ResourceVersion, claims: claims(p)}
		m.pods[p.UID] = e
	}
	e.gen = m.gen
	return e
}

// workloads compiles every pod that has an address in the cluster network
// (not hostNetwork, an IP, not deleted, not finished — a finished pod's IP
// may already be another pod's) into a Workload: HBONE when the agent
// enrolls it (namespace labelled weft.io/mesh=enabled, not excluded, pod
// not opted out), plain TCP otherwise.
//
// Nodes refuse a set in which two workloads share an IP or UID. The
// Kubernetes API never shows that, but informer caches can for a moment
// (a deleted pod not yet seen gone, its IP reused), so the newest pod
// keeps the address and the other loses it (and is left out when it has
// no address left).
func (c *pass) workloads() *workloadSet {
	meshed := make(map[string]bool, len(c.in.Namespaces))
	for _, ns := range c.in.Namespaces {
		if ns.Labels[MeshLabel] == MeshEnabled {
			meshed[ns.Name] = true
		}
	}
	delete(meshed, neverMeshed)
	for _, ns := range c.in.ExcludeNamespaces {
		delete(meshed, ns)
	}
	replicaSets := make(map[nsName]*appsv1.ReplicaSet, len(c.in.ReplicaSets))
	for _, rs := range c.in.ReplicaSets {
		replicaSets[key(rs.Namespace, rs.Name)] = rs
	}

	cands := c.memo.scratch.workloads[:0]
	for _, p := range c.in.Pods {
		if p.UID == "" {
			continue
		}
		if m := c.memo.podMemo(p); m.claims != nil {
			cands = append(cands, workload{pod: p, memo: m, ips: m.claims})
		}
	}
	c.memo.scratch.workloads = cands
	slices.SortFunc(cands, func(a, b workload) int {
		if c := strings.Compare(string(a.pod.UID), string(b.pod.UID)); c != 0 {
			return c
		}
		// The same UID twice is no real state; keep one, independently of
		// input order.
		return comparePodKeys(a.pod, b.pod)
	})

	set := &workloadSet{
		list:  make([]*workload, 0, len(cands)),
		byUID: c.memo.scratch.byUID,
		byIP:  c.memo.scratch.byIP,
	}
	clear(set.byUID)
	clear(set.byIP)
	conflict := false
	for i := range cands {
		w := &cands[i]
		if i > 0 && w.pod.UID == cands[i-1].pod.UID {
			w.ips = nil
			continue
		}
		for _, ip := range w.ips {
			k := ip.As16()
			o := set.byIP[k]
			if o == nil {
				set.byIP[k] = w
				continue
			}
			conflict = true
			if newerClaim(w.pod.CreationTimestamp, o.pod.CreationTimestamp, string(w.pod.UID), string(o.pod.UID)) {
				set.byIP[k] = w
			}
		}
	}
	lost := func(w *workload) func(netip.Addr) bool {
		return func(ip netip.Addr) bool { return set.byIP[ip.As16()] != w }
	}

	for i := range cands {
		w := &cands[i]
		if w.ips == nil {
			continue
		}
		owned := w.ips
		if conflict && slices.ContainsFunc(w.ips, lost(w)) {
			// Rare: a lost claim. The claims are the memo's; filter a
			// copy.
			owned = slices.DeleteFunc(slices.Clone(w.ips), lost(w))
		}
		w.ips = owned
		if len(owned) == 0 {
			continue
		}
		c.workloadResource(w, meshed, replicaSets)
		set.list = append(set.list, w)
		set.byUID[string(w.pod.UID)] = w
	}
	return set
}

// claims returns the addresses p claims in the cluster network, or nil
// when p has none of its own.
func claims(p *corev1.Pod) []netip.Addr {
	if p.Spec.HostNetwork || p.DeletionTimestamp != nil || p.UID == "" ||
		p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed ||
		p.Status.PodIP == "" {
		return nil
	}
	ns, sa := p.Namespace, serviceAccount(p)
	if p.Name == "" || !validSegment(ns) || !validSegment(sa) {
		return nil // no identity a node would accept
	}
	if !utf8.ValidString(string(p.UID)) {
		return nil // no resource name (two would be one once made valid)
	}
	var ips []netip.Addr
	if len(p.Status.PodIPs) == 0 {
		if a, ok := parseAddr(p.Status.PodIP); ok {
			ips = []netip.Addr{a}
		}
	} else {
		ips = make([]netip.Addr, 0, len(p.Status.PodIPs))
		for _, pip := range p.Status.PodIPs {
			if a, ok := parseAddr(pip.IP); ok && !slices.Contains(ips, a) {
				ips = append(ips, a)
			}
		}
	}
	if len(ips) == 0 {
		return nil
	}
	return ips
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName == "" {
		return "default"
	}
	return p.Spec.ServiceAccountName
}

func comparePodKeys(a, b *corev1.Pod) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.ResourceVersion, b.ResourceVersion)
}

// workloadResource sets w.memo.res to w's compiled resource, reusing the
// previous one when nothing it was built from changed.
func (c *pass) workloadResource(w *workload, meshed map[string]bool, replicaSets map[nsName]*appsv1.ReplicaSet) {
	p, m := w.pod, w.memo
	protocol := ProtocolTCP
	if meshed[p.Namespace] && p.Labels[MeshLabel] != MeshDisabled {
		protocol = ProtocolHBONE
	}
	name := workloadName(p, replicaSets)
	if m.res != nil && m.protocol == protocol && m.workloadName == name && slices.Equal(m.ips, w.ips) {
		return
	}
	ips := make([]string, len(w.ips))
	for i, ip := range w.ips {
		ips[i] = ip.String()
	}
	body := &meshv1.Workload{
		Uid:               validUTF8(string(p.UID)),
		Namespace:         p.Namespace,
		Name:              validUTF8(p.Name),
		ServiceAccount:    serviceAccount(p),
		Node:              validUTF8(p.Spec.NodeName),
		Ips:               ips,
		Protocol:          protocol,
		WorkloadName:      validUTF8(name),
		CanonicalService:  validUTF8(p.Labels[labelCanonicalName]),
		CanonicalRevision: validUTF8(p.Labels[labelCanonicalRevision]),
		App:               validUTF8(firstLabel(p.Labels, "app", "app.kubernetes.io/name")),
		Version:           validUTF8(firstLabel(p.Labels, "version", "app.kubernetes.io/version")),
	}
	m.res = c.resource(meshv1.WorkloadName(body.Uid), &meshv1.Resource{Body: &meshv1.Resource_Workload{Workload: body}})
	m.protocol, m.workloadName, m.ips = protocol, name, w.ips
}

// workloadName is Istio's workload name of a pod: its Deployment (through
// its ReplicaSet), else its controller, else the pod itself. A ReplicaSet
// the cache does not hold yet is resolved from the pod-template-hash
// label, so that the name does not flip once the cache catches up.
func workloadName(p *corev1.Pod, replicaSets map[nsName]*appsv1.ReplicaSet) string {
	ref := metav1.GetControllerOfNoCopy(p)
	if ref == nil {
		return p.Name
	}
	if ref.Kind != "ReplicaSet" {
		return ref.Name
	}
	if rs := replicaSets[key(p.Namespace, ref.Name)]; rs != nil {
		if d := metav1.GetControllerOfNoCopy(rs); d != nil && d.Kind == "Deployment" {
			return d.Name
		}
		return ref.Name
	}
	if h := p.Labels[labelPodTemplateHash]; h != "" {
		if d, ok := strings.CutSuffix(ref.Name, "-"+h); ok && d != "" {
			return d
		}
	}
	return ref.Name
}

func firstLabel(labels map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}
