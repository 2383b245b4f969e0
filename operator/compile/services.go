package compile

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

// svcCand is one Service being compiled.
type svcCand struct {
	svc  *corev1.Service
	memo *serviceMemo
	vips []netip.Addr // the VIPs it claims; nil: lost them all
}

// serviceMemo is what a Compiler remembers of one Service between
// compilations.
type serviceMemo struct {
	gen    uint64 // of the last Compile that saw the Service
	svc    *corev1.Service
	rv     string
	claims []netip.Addr // the VIPs the Service claims; nil: no Service

	// res is the Service's last compiled resource (nil: none yet), built
	// from svc and the values below, which come from other objects.
	res    *meshv1.Resource
	vips   []netip.Addr
	slices []objectVersion
	domain string
	refs   []endpointRef
}

// objectVersion identifies one state of a cached object.
type objectVersion struct {
	obj *discoveryv1.EndpointSlice
	rv  string
}

// endpointRef is one endpoint's link to a pod, and whether the compiled
// endpoint names that pod: whether it does depends on the workloads.
type endpointRef struct {
	uid  string
	addr netip.Addr
	kept bool
}

// serviceMemo returns svc's memo, reset when svc is not the object it was
// computed from.
func (m *Compiler) serviceMemo(svc *corev1.Service) *serviceMemo {
	k := key(svc.Namespace, svc.Name)
	e := m.services[k]
	if e == nil || e.svc != svc || e.rv != svc.ResourceVersion {
		e = &serviceMemo{svc: svc, rv: svc.ResourceVersion, claims: vipClaims(svc)}
		m.services[k] = e
	}
	e.gen = m.gen
	return e
}

// services compiles every Service with a ClusterIP (headless and
// ExternalName Services have no VIP for a node to resolve) into a Service
// with its TCP ports and its EndpointSlices' endpoints, sorted by
// namespace/name.
//
// Nodes refuse a set in which a VIP is also a workload IP or two Services
// share a VIP. As with pod IPs, only stale caches show that: a VIP that is
// a workload's IP is dropped, and a shared VIP stays with the newest
// Service.
func (c *pass) services(ws *workloadSet) []*meshv1.Resource {
	slicesBySvc := make(map[nsName][]*discoveryv1.EndpointSlice, len(c.in.Services))
	for _, es := range c.in.EndpointSlices {
		name := es.Labels[discoveryv1.LabelServiceName]
		if name == "" || es.DeletionTimestamp != nil {
			continue
		}
		k := key(es.Namespace, name)
		slicesBySvc[k] = append(slicesBySvc[k], es)
	}

	cands := c.memo.scratch.services[:0]
	for _, svc := range c.in.Services {
		if !validKey(svc.Namespace, svc.Name) {
			continue
		}
		// Two objects of one name (no real state) share a memo entry:
		// still correct, only not reused.
		if m := c.memo.serviceMemo(svc); m.claims != nil {
			cands = append(cands, svcCand{svc: svc, memo: m, vips: m.claims})
		}
	}
	c.memo.scratch.services = cands
	slices.SortFunc(cands, func(a, b svcCand) int {
		if c := strings.Compare(a.svc.Namespace, b.svc.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(a.svc.Name, b.svc.Name); c != 0 {
			return c
		}
		// The same Service twice is no real state; keep one, whatever the
		// input order.
		if c := strings.Compare(string(a.svc.UID), string(b.svc.UID)); c != 0 {
			return c
		}
		return strings.Compare(a.svc.ResourceVersion, b.svc.ResourceVersion)
	})

	owner := c.memo.scratch.vipOwner
	clear(owner)
	contested := false // a VIP claimed twice, or a pod IP
	for i := range cands {
		s := &cands[i]
		if i > 0 && s.svc.Namespace == cands[i-1].svc.Namespace && s.svc.Name == cands[i-1].svc.Name {
			s.vips = nil // the same Service twice: keep one
			continue
		}
		for _, vip := range s.vips {
			if ws.byIP[vip.As16()] != nil {
				contested = true
				continue
			}
			k := vip.As16()
			o := owner[k]
			if o == nil {
				owner[k] = s
				continue
			}
			contested = true
			if newerClaim(s.svc.CreationTimestamp, o.svc.CreationTimestamp, s.svc.Namespace+"/"+s.svc.Name, o.svc.Namespace+"/"+o.svc.Name) {
				owner[k] = s
			}
		}
	}

	out := make([]*meshv1.Resource, 0, len(cands))
	for i := range cands {
		s := &cands[i]
		if s.vips == nil {
			continue
		}
		vips := s.vips
		lost := func(a netip.Addr) bool { return owner[a.As16()] != s }
		if contested && slices.ContainsFunc(vips, lost) {
			// Rare (a lost claim, or a VIP that is a pod IP). The claims
			// are the memo's; filter a copy.
			vips = slices.DeleteFunc(slices.Clone(vips), lost)
		}
		if len(vips) == 0 {
			continue
		}
		eslices := slicesBySvc[key(s.svc.Namespace, s.svc.Name)]
		slices.SortFunc(eslices, func(a, b *discoveryv1.EndpointSlice) int {
			if c := strings.Compare(a.Name, b.Name); c != 0 {
				return c
			}
			return strings.Compare(a.ResourceVersion, b.ResourceVersion)
		})
		if r := c.serviceResource(s, vips, eslices, ws); r != nil {
			out = append(out, r)
		}
	}
	return out
}

// vipClaims returns the VIPs svc claims, or nil when it has none to
// resolve.
func vipClaims(svc *corev1.Service) []netip.Addr {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.DeletionTimestamp != nil {
		return nil
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	vips := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, ok := parseAddr(ip); ok && !slices.Contains(vips, a) {
			vips = append(vips, a)
		}
	}
	if len(vips) == 0 {
		return nil
	}
	return vips
}

// serviceResource returns s's compiled resource, reusing the previous one
// when nothing it was built from changed.
func (c *pass) serviceResource(s *svcCand, vips []netip.Addr, eslices []*discoveryv1.EndpointSlice, ws *workloadSet) *meshv1.Resource {
	m := s.memo
	if m.res != nil && m.domain == c.clusterDomain && slices.Equal(m.vips, vips) && sameSlices(m.slices, eslices) &&
		!slices.ContainsFunc(m.refs, func(r endpointRef) bool { return namesWorkload(ws, r.uid, r.addr) != r.kept }) {
		return m.res
	}
	body, refs := c.serviceBody(s.svc, vips, eslices, ws)
	m.res = c.resource(meshv1.ServiceName(body.Namespace, body.Name), &meshv1.Resource{Body: &meshv1.Resource_Service{Service: body}})
	m.vips, m.domain, m.refs = vips, c.clusterDomain, refs
	m.slices = make([]objectVersion, len(eslices))
	for i, es := range eslices {
		m.slices[i] = objectVersion{obj: es, rv: es.ResourceVersion}
	}
	return m.res
}

func sameSlices(had []objectVersion, now []*discoveryv1.EndpointSlice) bool {
	if len(had) != len(now) {
		return false
	}
	for i, es := range now {
		if had[i].obj != es || had[i].rv != es.ResourceVersion {
			return false
		}
	}
	return true
}

// namesWorkload reports whether an endpoint at addr of pod uid may name
// it: nodes refuse an endpoint naming a workload that lacks its address.
// A pod that is no workload (host network, deleted a moment before its
// slice is updated) keeps its UID: nodes fall back to the address, and
// the Service does not change twice for one pod deletion.
func namesWorkload(ws *workloadSet, uid string, addr netip.Addr) bool {
	w := ws.byUID[uid]
	return w == nil || slices.Contains(w.ips, addr)
}

// endpoint is one address of an EndpointSlice, with the port it serves
// each compiled service port on (0: its slice lacks that port).
type endpoint struct {
	addr  netip.Addr
	ready bool
	uid   string
	slice string
	ports []uint32 // parallel to the Service's compiled ports
}

// serviceBody compiles svc, and returns the links of its endpoints to
// pods.
func (c *pass) serviceBody(svc *corev1.Service, vips []netip.Addr, eslices []*discoveryv1.EndpointSlice, ws *workloadSet) (*meshv1.Service, []endpointRef) {
	out := &meshv1.Service{
		Namespace: svc.Namespace,
		Name:      validUTF8(svc.Name),
		Hostname:  validUTF8(svc.Name + "." + svc.Namespace + ".svc." + c.clusterDomain),
		Vips:      make([]string, len(vips)),
	}
	for i, vip := range vips {
		out.Vips[i] = vip.String()
	}
	// The slices name their ports as the Service's ports are named, and
	// carry each port as resolved for their endpoints: that is the only
	// place a named target port has a number.
	var named []string // per compiled port, its name
	var fixed []uint32 // per compiled port, its numeric target port (0: named)
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		if (sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP) || !validPort(sp.Port) ||
			slices.ContainsFunc(out.Ports, func(p *meshv1.ServicePort) bool { return p.Port == uint32(sp.Port) }) {
			continue
		}
		target := uint32(0)
		switch {
		case sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0,
			sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal == "":
			target = uint32(sp.Port) // unset: the API server defaults it to port
		case sp.TargetPort.Type == intstr.Int && validPort(sp.TargetPort.IntVal):
			target = uint32(sp.TargetPort.IntVal)
		case sp.TargetPort.Type == intstr.Int:
			continue // out of range: no endpoint can serve it
		}
		out.Ports = append(out.Ports, &meshv1.ServicePort{Name: validUTF8(sp.Name), Port: uint32(sp.Port)})
		named = append(named, sp.Name)
		fixed = append(fixed, target)
	}

	eps, refs := collectEndpoints(eslices, named, ws)
	for i, sp := range out.Ports {
		sp.TargetPort = targetPort(eps, i, fixed[i])
	}
	out.Endpoints = make([]*meshv1.Endpoint, 0, len(eps))
	for _, e := range eps {
		ep := &meshv1.Endpoint{Address: e.addr.String(), WorkloadUid: e.uid, Ready: e.ready}
		for i, sp := range out.Ports {
			if p := e.ports[i]; p != 0 && p != sp.TargetPort {
				if ep.Ports == nil {
					ep.Ports = make(map[uint32]uint32, len(out.Ports))
				}
				ep.Ports[sp.Port] = p
			}
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out, refs
}

// targetPort is the port of compiled service port i for every endpoint
// that does not say otherwise: the one number all endpoints serve it on,
// or else its numeric target port (0 for a named one: then each endpoint
// says).
func targetPort(eps []*endpoint, i int, fixed uint32) uint32 {
	uniform := uint32(0)
	for _, e := range eps {
		switch p := e.ports[i]; {
		case p == 0:
		case uniform == 0:
			uniform = p
		case p != uniform:
			return fixed
		}
	}
	if uniform == 0 {
		return fixed
	}
	return uniform
}

// collectEndpoints gathers the endpoints of a Service's slices, sorted by
// address, and their links to pods. An address in several slices (an
// endpoint moving between slices) is kept once, ready if any slice says
// so.
func collectEndpoints(eslices []*discoveryv1.EndpointSlice, portNames []string, ws *workloadSet) ([]*endpoint, []endpointRef) {
	var eps []*endpoint
	var refs []endpointRef
	for _, es := range eslices {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN endpoints name no address a node can dial
		}
		ports := make([]uint32, len(portNames))
		for i, name := range portNames {
			for _, p := range es.Ports {
				if ptrStr(p.Name) == name && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) &&
					p.Port != nil && validPort(*p.Port) {
					ports[i] = uint32(*p.Port)
					break
				}
			}
		}
		for j := range es.Endpoints {
			ep := &es.Endpoints[j]
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			var uid string
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				uid = string(ep.TargetRef.UID)
			}
			for _, s := range ep.Addresses {
				addr, ok := parseAddr(s)
				if !ok {
					continue
				}
				e := &endpoint{addr: addr, ready: ready, slice: es.Name, ports: ports}
				if uid != "" {
					kept := namesWorkload(ws, uid, addr)
					if kept {
						e.uid = validUTF8(uid)
					}
					refs = append(refs, endpointRef{uid: uid, addr: addr, kept: kept})
				}
				eps = append(eps, e)
			}
		}
	}
	slices.SortFunc(eps, func(a, b *endpoint) int {
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		if a.ready != b.ready {
			if a.ready {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.slice, b.slice)
	})
	return slices.CompactFunc(eps, func(a, b *endpoint) bool { return a.addr == b.addr }), refs
}

func validPort(p int32) bool { return p >= 1 && p <= 65535 }

func ptrStr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
