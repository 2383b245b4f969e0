package compile

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	"github.com/weftmesh/weft/internal/spiffe"
)

// Policy modes (Helm value policy.mode, ARCHITECTURE.md §6).
const (
	ModePermissive = "permissive"
	ModeStrict     = "strict"
)

// Workload protocols (meshv1.Workload.Protocol).
const (
	ProtocolHBONE = "HBONE"
	ProtocolTCP   = "TCP"
)

// MeshLabel enrolls a namespace ("enabled") or opts a pod out
// ("disabled"), as the agent reads it.
const (
	MeshLabel    = "weft.io/mesh"
	MeshEnabled  = "enabled"
	MeshDisabled = "disabled"
)

// DefaultClusterDomain is the cluster DNS domain of Services' hostnames
// when Inputs.ClusterDomain is "".
const DefaultClusterDomain = "cluster.local"

// neverMeshed is excluded from the mesh whatever its label says, as the
// agent excludes it.
const neverMeshed = "kube-system"

// Inputs is everything Compile reads; pointers are shared with informer
// caches and must never be mutated. Compile only reads an Inputs, so
// several calls may share one concurrently. The slices may be in any order.
type Inputs struct {
	TrustDomain    string // "" = cluster.local
	PolicyMode     string // "permissive" (default) | "strict"
	TrustBundlePEM []byte // every root nodes must trust (CA rotation adds the new root here first)
	// ClusterDomain is the DNS domain of Service hostnames; "" means
	// cluster.local.
	ClusterDomain string
	// ExcludeNamespaces are never meshed, as the agent's
	// (agent.Config.ExcludeNamespaces plus its install namespace): their
	// pods compile as plain-TCP workloads even in an enrolled namespace, so
	// that no client sends HBONE to a pod the agent never enrolled.
	// kube-system is always excluded.
	ExcludeNamespaces []string

	Namespaces      []*corev1.Namespace
	Pods            []*corev1.Pod
	Services        []*corev1.Service
	EndpointSlices  []*discoveryv1.EndpointSlice
	ReplicaSets     []*appsv1.ReplicaSet // for workload names (Deployment owner)
	TrafficTargets  []*accessv1alpha3.TrafficTarget
	TCPRoutes       []*specsv1alpha4.TCPRoute
	HTTPRouteGroups []*specsv1alpha4.HTTPRouteGroup
}

// Output is one compilation. It belongs to the caller; its Resources are
// never written after Compile returns, so they may be shared with every
// node's stream (meshstream.Server.SetNode) without copying.
type Output struct {
	// Resources is the full set, sorted by name; every node receives this
	// set (see the package comment for why).
	Resources []*meshv1.Resource
	// SystemVersion is a content hash of the whole set.
	SystemVersion string
	// Accepted is the Accepted condition (Type, Status, Reason, Message,
	// ObservedGeneration; no timestamps) each TrafficTarget should carry,
	// by namespace/name. TrafficTargets being deleted have none.
	Accepted map[types.NamespacedName]metav1.Condition
}

// Compile compiles in into the per-node resource set (see the package
// comment). It is deterministic: inputs that differ only in the order of
// their slices give equal Outputs, and a resource's version is a hash of
// its content alone, so an unchanged resource keeps its version across
// compilations and operator restarts.
//
// A PolicyMode other than permissive or strict compiles as strict (fail
// closed); callers check their settings with Inputs.Validate first.
// TrafficSplits are not an input: they compile to nothing until waypoints
// exist.
//
// Compile is safe for concurrent use. It compiles everything afresh; a
// caller that compiles on every change uses a Compiler instead.
func Compile(in Inputs) Output {
	var c Compiler
	return c.Compile(in)
}

// Compiler compiles successive Inputs of one cluster, as Compile does,
// reusing what it compiled for a pod or Service whose objects did not
// change since its previous call: after a TrafficTarget change or one pod
// added, only the changed resources are built and hashed again, and the
// unchanged ones are the very Resources of the previous Output.
//
// An object counts as unchanged when the same pointer with the same
// ResourceVersion comes back, which is what informer caches give (they
// replace an object on update and never modify it); an object copied
// anew every time is merely compiled anew every time. Compiler.Compile's
// output is always equal to Compile's for the same Inputs.
//
// The zero Compiler is ready to use. It is not safe for concurrent use:
// one goroutine (the operator's compile loop) owns it.
type Compiler struct {
	gen      uint64 // of the current or last Compile
	pods     map[types.UID]*podMemo
	services map[nsName]*serviceMemo
	// scratch is reused by every Compile, so that a recompilation that
	// changes little allocates little.
	scratch struct {
		workloads []workload
		services  []svcCand
		byUID     map[string]*workload
		byIP      map[addrKey]*workload
		vipOwner  map[addrKey]*svcCand
		hash      hasher
	}
}

// addrKey is an address as a map key (netip.Addr's As16): it hashes
// faster than netip.Addr. Every address here is unmapped, so IPv4 and
// IPv6 keys never collide.
type addrKey = [16]byte

// Compile compiles in; see the package-level Compile.
func (m *Compiler) Compile(in Inputs) Output {
	m.gen++
	if m.pods == nil {
		m.pods = make(map[types.UID]*podMemo, len(in.Pods))
		m.services = make(map[nsName]*serviceMemo, len(in.Services))
		m.scratch.byUID = make(map[string]*workload, len(in.Pods))
		m.scratch.byIP = make(map[addrKey]*workload, len(in.Pods))
		m.scratch.vipOwner = make(map[addrKey]*svcCand, len(in.Services))
	}
	c := newPass(&in, m)
	settings := c.settings()
	workloads := c.workloads()
	services := c.services(workloads)
	policies, accepted := c.policies()
	m.sweep()

	res := make([]*meshv1.Resource, 0, len(policies)+len(services)+1+len(workloads.list))
	// Each kind comes sorted by the rest of its name, and the kinds'
	// prefixes sort policies/ < services/ < settings < workloads/, so the
	// concatenation is sorted by name.
	for _, p := range policies {
		res = c.appendResource(res, meshv1.PolicyName(p.nsName.Namespace, p.nsName.Name), &meshv1.Resource{Body: &meshv1.Resource_Policy{Policy: p.body}})
	}
	res = append(res, services...)
	res = c.appendResource(res, meshv1.SettingsName, &meshv1.Resource{Body: &meshv1.Resource_Settings{Settings: settings}})
	for _, w := range workloads.list {
		if w.memo.res != nil {
			res = append(res, w.memo.res)
		}
	}
	return Output{Resources: res, SystemVersion: c.hash.systemVersion(res), Accepted: accepted}
}

// sweep forgets the objects the current Compile did not see.
func (m *Compiler) sweep() {
	for k, e := range m.pods {
		if e.gen != m.gen {
			delete(m.pods, k)
		}
	}
	for k, e := range m.services {
		if e.gen != m.gen {
			delete(m.services, k)
		}
	}
}

// Validate reports settings that every node would refuse (an invalid trust
// domain, an unknown policy mode, a trust bundle that is not PEM
// certificates) or that Compile would have to guess at; the operator
// checks them before it compiles, and refuses to start with them.
func (in *Inputs) Validate() error {
	if in.TrustDomain != "" {
		if _, err := spiffe.NewID(in.TrustDomain, "ns", "sa"); err != nil {
			return fmt.Errorf("check trust domain %q: %w", in.TrustDomain, err)
		}
	}
	switch in.PolicyMode {
	case "", ModePermissive, ModeStrict:
	default:
		return fmt.Errorf("check policy mode %q: want %q or %q", in.PolicyMode, ModePermissive, ModeStrict)
	}
	if err := checkBundle(in.TrustBundlePEM); err != nil {
		return fmt.Errorf("check trust bundle: %w", err)
	}
	return nil
}

func checkBundle(bundle []byte) error {
	rest := bundle
	for n := 0; len(bytes.TrimSpace(rest)) > 0; n++ {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		switch {
		case blk == nil:
			return fmt.Errorf("block %d is not PEM", n)
		case blk.Type != "CERTIFICATE":
			return fmt.Errorf("block %d is a %q, want CERTIFICATE", n, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("parse certificate %d: %w", n, err)
		}
	}
	return nil
}

// pass is one Compile: its inputs, settings and scratch space.
type pass struct {
	in            *Inputs
	memo          *Compiler
	trustDomain   string
	clusterDomain string
	hash          *hasher
}

func newPass(in *Inputs, memo *Compiler) *pass {
	c := &pass{in: in, memo: memo, hash: &memo.scratch.hash, trustDomain: in.TrustDomain, clusterDomain: in.ClusterDomain}
	if c.trustDomain == "" {
		c.trustDomain = spiffe.DefaultTrustDomain
	}
	if c.clusterDomain == "" {
		c.clusterDomain = DefaultClusterDomain
	}
	return c
}

func (c *pass) settings() *meshv1.MeshSettings {
	mode := c.in.PolicyMode
	switch mode {
	case "":
		mode = ModePermissive
	case ModePermissive, ModeStrict:
	default:
		mode = ModeStrict
	}
	return &meshv1.MeshSettings{
		TrustDomain:    c.trustDomain,
		PolicyMode:     mode,
		TrustBundlePem: validUTF8(string(c.in.TrustBundlePEM)),
	}
}

// appendResource appends r to res, named and versioned (see resource).
func (c *pass) appendResource(res []*meshv1.Resource, name string, r *meshv1.Resource) []*meshv1.Resource {
	if r = c.resource(name, r); r != nil {
		res = append(res, r)
	}
	return res
}

// resource names and versions r. A resource that cannot be serialized
// (unreachable: every string is made valid UTF-8) gives nil: it is left
// out rather than sent to nodes that could not decode it.
func (c *pass) resource(name string, r *meshv1.Resource) *meshv1.Resource {
	v, err := c.hash.version(r)
	if err != nil {
		return nil
	}
	r.Name = name
	r.Version = v
	return r
}

// newerClaim reports whether claimant a of one address (a pod IP, a
// Service VIP) beats claimant b: the newer object wins, as an address is
// reused only after its previous owner is gone (an informer may still
// hold the old one); between equally old ones the smaller key, so that
// the winner does not depend on input order.
func newerClaim(aTime, bTime metav1.Time, aKey, bKey string) bool {
	if !aTime.Equal(&bTime) {
		return aTime.After(bTime.Time)
	}
	return aKey < bKey
}

// parseAddr parses an address as nodes accept it: valid, no zone, not
// unspecified, IPv4-mapped IPv6 unmapped.
func parseAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// validSegment reports whether s can be a namespace or ServiceAccount
// segment of a SPIFFE ID (nodes refuse a set holding one that cannot).
func validSegment(s string) bool {
	_, err := spiffe.NewID(spiffe.DefaultTrustDomain, s, "sa")
	return err == nil
}

// validKey reports whether namespace/name can name a resource: not
// empty, and valid UTF-8 (so that validUTF8 cannot make two keys one).
func validKey(namespace, name string) bool {
	return namespace != "" && name != "" && utf8.ValidString(namespace) && utf8.ValidString(name)
}

// validUTF8 keeps protobuf serialization from failing on a string copied
// from an object that was not validated by an API server.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

type nsName = types.NamespacedName

func key(ns, name string) nsName { return nsName{Namespace: ns, Name: name} }
