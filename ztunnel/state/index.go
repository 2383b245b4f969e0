package state

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftmesh/weft/internal/spiffe"
)

// index holds what the per-connection decisions look up, computed once per
// Snapshot so that they neither scan nor allocate.
type index struct {
	snap  *Snapshot
	byIP  map[netip.Addr]*Workload // keys unmapped
	byUID map[string]*Workload
	// svcPorts holds the finished Resolution of each VIP:port (keys
	// unmapped); its Candidates are shared by every caller.
	svcPorts map[netip.AddrPort]*Resolution
	vips     map[netip.Addr]*Service // first Service with the VIP
	dests    map[destKey]*destInfo
	roots    []*x509.Certificate
}

type destKey struct{ ns, sa string }

// destInfo is what Authorize needs about one destination ServiceAccount.
type destInfo struct {
	label          string // shop/sa/d
	policies       []*policyInfo
	selectedBy     string // names of the policies, comma separated
	selectedByText string // the same, for a sentence
	// permissive is the reason of a permissive allow when no policy
	// selects the destination.
	permissive string
}

type policyInfo struct {
	p       *Policy
	sources []spiffe.ID
	allowed string // reason of an allow by this policy
}

// Validate reports the first problem that makes s unusable: a missing
// required field; an invalid address (or one with a zone, or unspecified);
// a port outside 1..65535; a namespace or ServiceAccount that cannot be part
// of a SPIFFE ID; an IP owned by two workloads; a VIP that is a workload IP;
// a VIP:port owned by two services; an endpoint naming a workload that does
// not have its address; two policies of one name; a policy source that is
// not a SPIFFE ID of the trust domain; an unknown policy mode or workload
// protocol; or a trust bundle that is not PEM certificates. Errors name the
// offending item, e.g. "workload shop/cart: ip: 0.0.0.0 is unspecified".
//
// Rule kinds are not checked: a kind Authorize does not know allows
// nothing, so that a newer operator's rules fail closed here instead of
// making the whole snapshot invalid.
func (s *Snapshot) Validate() error {
	_, err := buildIndex(s)
	return err
}

// index returns s's index, building a throw-away one when s was not indexed
// (or is a copy of an indexed Snapshot): s may be shared, so it is never
// written here.
func (s *Snapshot) index() *index {
	if x := s.idx; x != nil && x.snap == s {
		return x
	}
	x, _ := buildIndex(s)
	return x
}

// indexed returns s, or a shallow copy of it, carrying a valid index.
func (s *Snapshot) indexed() *Snapshot {
	if s.idx != nil && s.idx.snap == s {
		return s
	}
	c := *s
	c.idx, _ = buildIndex(&c)
	return &c
}

// WorkloadByIP returns the workload owning ip (an IPv4-mapped IPv6 address
// finds the IPv4 owner), or nil.
func (s *Snapshot) WorkloadByIP(ip netip.Addr) *Workload {
	return s.index().byIP[ip.Unmap()]
}

// WorkloadByUID returns the workload with uid, or nil.
func (s *Snapshot) WorkloadByUID(uid string) *Workload {
	return s.index().byUID[uid]
}

// Identity returns w's SPIFFE ID in s's trust domain; the zero ID for nil.
func (s *Snapshot) Identity(w *Workload) spiffe.ID {
	if w == nil {
		return spiffe.ID{}
	}
	return spiffe.ID{TrustDomain: s.trustDomain(), Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}
}

// TrustedRoots returns the certificates of TrustBundle. The slice and the
// certificates are shared: do not modify them.
func (s *Snapshot) TrustedRoots() []*x509.Certificate {
	return s.index().roots
}

func (s *Snapshot) trustDomain() string {
	if s.TrustDomain == "" {
		return spiffe.DefaultTrustDomain
	}
	return s.TrustDomain
}

func isHBONE(w *Workload) bool {
	return w != nil && (w.Protocol == "" || w.Protocol == ProtocolHBONE)
}

// builder validates while it indexes: the checks need the same maps. It
// keeps going after a problem, so that an unvalidated Snapshot still gets a
// usable index (first owner wins), and reports the first problem.
type builder struct {
	x           *index
	policyNames map[string]bool
	err         error
}

func (b *builder) fail(format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf(format, args...)
	}
}

func buildIndex(s *Snapshot) (*index, error) {
	b := &builder{policyNames: make(map[string]bool), x: &index{
		snap:     s,
		byIP:     make(map[netip.Addr]*Workload),
		byUID:    make(map[string]*Workload, len(s.Workloads)),
		svcPorts: make(map[netip.AddrPort]*Resolution),
		vips:     make(map[netip.Addr]*Service),
		dests:    make(map[destKey]*destInfo),
	}}
	b.global(s)
	for i := range s.Workloads {
		b.workload(s, i)
	}
	for i := range s.Services {
		b.service(s, i)
	}
	for i := range s.Policies {
		b.policy(s, i)
	}
	for _, d := range b.x.dests {
		names := make([]string, len(d.policies))
		for i, p := range d.policies {
			names[i] = p.p.Name
		}
		d.selectedBy = strings.Join(names, ",")
		d.selectedByText = strings.Join(names, ", ")
	}
	return b.x, b.err
}

func (b *builder) global(s *Snapshot) {
	switch s.PolicyMode {
	case "", ModePermissive, ModeStrict:
	default:
		b.fail("policy mode %q: want %q or %q", s.PolicyMode, ModePermissive, ModeStrict)
	}
	if s.TrustDomain != "" {
		// Any valid segments will do: this checks the trust domain alone.
		if _, err := spiffe.NewID(s.TrustDomain, "ns", "sa"); err != nil {
			b.fail("trust domain %q: %w", s.TrustDomain, err)
		}
	}
	roots, err := parseBundle(s.TrustBundle)
	if err != nil {
		b.fail("trust bundle: %w", err)
	}
	b.x.roots = roots
}

func parseBundle(bundle string) ([]*x509.Certificate, error) {
	rest := []byte(bundle)
	var roots []*x509.Certificate
	for n := 0; ; n++ {
		if len(bytes.TrimSpace(rest)) == 0 {
			return roots, nil
		}
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		switch {
		case blk == nil:
			return nil, fmt.Errorf("block %d is not PEM", n)
		case blk.Type != "CERTIFICATE":
			return nil, fmt.Errorf("block %d is a %q, want CERTIFICATE", n, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", n, err)
		}
		roots = append(roots, c)
	}
}

func (b *builder) workload(s *Snapshot, i int) {
	w := &s.Workloads[i]
	label := itemLabel(i, w.Namespace, w.Name)
	switch {
	case w.UID == "":
		b.fail("workload %s: missing uid", label)
	case b.x.byUID[w.UID] != nil:
		b.fail("workload %s: uid %q is also the uid of workload %s", label, w.UID, b.x.byUID[w.UID].label())
	default:
		b.x.byUID[w.UID] = w
	}
	switch {
	case w.Namespace == "":
		b.fail("workload %s: missing namespace", label)
	case w.Name == "":
		b.fail("workload %s: missing name", label)
	case w.ServiceAccount == "":
		b.fail("workload %s: missing serviceAccount", label)
	default:
		if _, err := spiffe.NewID(s.trustDomain(), w.Namespace, w.ServiceAccount); err != nil {
			b.fail("workload %s: identity: %w", label, err)
		}
	}
	switch w.Protocol {
	case "", ProtocolHBONE, ProtocolTCP:
	default:
		b.fail("workload %s: protocol %q: want %q or %q", label, w.Protocol, ProtocolHBONE, ProtocolTCP)
	}
	if len(w.IPs) == 0 {
		b.fail("workload %s: no ips", label)
	}
	for _, ip := range w.IPs {
		if err := checkAddr(ip); err != nil {
			b.fail("workload %s: ip: %w", label, err)
			continue
		}
		ip = ip.Unmap()
		if o := b.x.byIP[ip]; o != nil {
			if o != w {
				b.fail("workload %s: ip %v is also an ip of workload %s", label, ip, o.label())
			}
			continue
		}
		b.x.byIP[ip] = w
	}
	// Every destination gets its reasons computed here, not per connection.
	b.dest(w.Namespace, w.ServiceAccount)
}

func checkAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("missing address")
	case a.Zone() != "":
		return fmt.Errorf("%v has a zone", a)
	case a.IsUnspecified():
		return fmt.Errorf("%v is unspecified", a)
	}
	return nil
}

func (w *Workload) label() string { return w.Namespace + "/" + w.Name }

func (b *builder) dest(ns, sa string) *destInfo {
	k := destKey{ns, sa}
	if d := b.x.dests[k]; d != nil {
		return d
	}
	label := ns + "/sa/" + sa
	d := &destInfo{
		label:      label,
		permissive: "permissive mode: no TrafficTarget selects " + label,
	}
	b.x.dests[k] = d
	return d
}

func (b *builder) service(s *Snapshot, i int) {
	svc := &s.Services[i]
	label := itemLabel(i, svc.Namespace, svc.Name)
	switch {
	case svc.Namespace == "":
		b.fail("service %s: missing namespace", label)
	case svc.Name == "":
		b.fail("service %s: missing name", label)
	}
	// The candidates of each port, shared by all VIPs of the Service.
	res := make(map[uint16]*Resolution, len(svc.Ports))
	for j := range svc.Ports {
		sp := &svc.Ports[j]
		switch {
		case sp.Port == 0:
			b.fail("service %s: port %d: port 0 is not in 1..65535", label, j)
		case res[sp.Port] != nil:
			b.fail("service %s: port %d listed twice", label, sp.Port)
		default:
			res[sp.Port] = b.resolution(svc, sp)
		}
	}
	for j := range svc.Endpoints {
		b.endpoint(label, svc, j)
	}
	for _, vip := range svc.VIPs {
		if err := checkAddr(vip); err != nil {
			b.fail("service %s: vip: %w", label, err)
			continue
		}
		vip = vip.Unmap()
		if w := b.x.byIP[vip]; w != nil {
			b.fail("service %s: vip %v is also an ip of workload %s", label, vip, w.label())
			continue
		}
		if _, ok := b.x.vips[vip]; !ok {
			b.x.vips[vip] = svc
		}
		for j := range svc.Ports {
			r := res[svc.Ports[j].Port]
			if r == nil || r.Port != &svc.Ports[j] {
				continue // port 0, or listed twice
			}
			k := netip.AddrPortFrom(vip, r.Port.Port)
			if o := b.x.svcPorts[k]; o != nil {
				if o.Service != svc {
					b.fail("service %s: %v is also a port of service %s", label, k, o.Service.label())
				}
				continue
			}
			b.x.svcPorts[k] = r
		}
	}
}

func (svc *Service) label() string { return svc.Namespace + "/" + svc.Name }

func (b *builder) endpoint(label string, svc *Service, j int) {
	ep := &svc.Endpoints[j]
	if err := checkAddr(ep.Address); err != nil {
		b.fail("service %s: endpoint %d: address: %w", label, j, err)
		return
	}
	// The lowest bad mapping, so that the error does not depend on map
	// order.
	bad, found := uint16(0), false
	for from, to := range ep.Ports {
		if (from == 0 || to == 0) && (!found || from < bad) {
			bad, found = from, true
		}
	}
	if found {
		b.fail("service %s: endpoint %v: port mapping %d→%d is not in 1..65535", label, ep.Address, bad, ep.Ports[bad])
	}
	if ep.WorkloadUID == "" {
		return
	}
	w := b.x.byUID[ep.WorkloadUID]
	if w == nil {
		return // a workload the snapshot does not (yet) hold
	}
	if !w.hasIP(ep.Address) {
		b.fail("service %s: endpoint %v names workload %s (uid %q), which does not have that ip", label, ep.Address, w.label(), w.UID)
	}
}

func (w *Workload) hasIP(a netip.Addr) bool {
	a = a.Unmap()
	for _, ip := range w.IPs {
		if ip.Unmap() == a {
			return true
		}
	}
	return false
}

// resolution computes the candidates of one service port.
func (b *builder) resolution(svc *Service, sp *ServicePort) *Resolution {
	r := &Resolution{Service: svc, Port: sp}
	for i := range svc.Endpoints {
		ep := &svc.Endpoints[i]
		if !ep.Ready || checkAddr(ep.Address) != nil {
			continue
		}
		port := sp.Port
		if p, ok := ep.Ports[sp.Port]; ok && p != 0 {
			port = p
		} else if sp.TargetPort != 0 {
			port = sp.TargetPort
		}
		addr := ep.Address.Unmap()
		w := b.x.byUID[ep.WorkloadUID]
		if w == nil || !w.hasIP(addr) {
			w = b.x.byIP[addr]
		}
		r.Candidates = append(r.Candidates, Target{
			Addr:     netip.AddrPortFrom(addr, port),
			Workload: w,
			HBONE:    isHBONE(w),
		})
	}
	return r
}

func (b *builder) policy(s *Snapshot, i int) {
	p := &s.Policies[i]
	label := p.Name
	if label == "" {
		label = itemLabel(i, "", "")
		b.fail("policy %s: missing name", label)
	}
	if p.Name != "" {
		if b.policyNames[p.Name] {
			b.fail("policy %s: name listed twice", label)
		}
		b.policyNames[p.Name] = true
	}
	dst := p.Destination
	switch {
	case dst.Namespace == "":
		b.fail("policy %s: destination: missing namespace", label)
	case dst.ServiceAccount == "":
		b.fail("policy %s: destination: missing serviceAccount", label)
	}
	pi := &policyInfo{p: p, allowed: "allowed by TrafficTarget " + p.Name}
	td := s.trustDomain()
	for j, src := range p.Sources {
		id, err := spiffe.ParseID(src)
		if err != nil {
			b.fail("policy %s: source %d: %w", label, j, err)
			continue
		}
		if id.TrustDomain != td {
			b.fail("policy %s: source %q is not in trust domain %q", label, src, td)
			continue
		}
		pi.sources = append(pi.sources, id)
	}
	for j, r := range p.Rules {
		if r.Kind == "" {
			b.fail("policy %s: rule %d: missing kind", label, j)
		}
		for _, port := range r.Ports {
			if port == 0 {
				b.fail("policy %s: rule %d: port 0 is not in 1..65535", label, j)
			}
		}
	}
	d := b.dest(dst.Namespace, dst.ServiceAccount)
	d.policies = append(d.policies, pi)
}
