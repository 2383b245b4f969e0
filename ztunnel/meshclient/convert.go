package meshclient

import (
	"fmt"
	"net/netip"
	"sort"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/ztunnel/state"
)

// Snapshot converts a node's whole resource set into a validated, indexed
// snapshot named by systemVersion.
func Snapshot(resources map[string]*meshv1.Resource, systemVersion string) (*state.Snapshot, error) {
	names := make([]string, 0, len(resources))
	for n := range resources {
		names = append(names, n)
	}
	// Sorted, so the same set always yields the same snapshot.
	sort.Strings(names)
	snap := &state.Snapshot{Version: systemVersion}
	settings := 0
	for _, n := range names {
		r := resources[n]
		switch b := r.GetBody().(type) {
		case *meshv1.Resource_Settings:
			settings++
			snap.TrustDomain = b.Settings.GetTrustDomain()
			snap.PolicyMode = b.Settings.GetPolicyMode()
			snap.TrustBundle = b.Settings.GetTrustBundlePem()
		case *meshv1.Resource_Workload:
			w, err := workload(b.Workload)
			if err != nil {
				return nil, fmt.Errorf("resource %s: %w", n, err)
			}
			snap.Workloads = append(snap.Workloads, w)
		case *meshv1.Resource_Service:
			s, err := service(b.Service)
			if err != nil {
				return nil, fmt.Errorf("resource %s: %w", n, err)
			}
			snap.Services = append(snap.Services, s)
		case *meshv1.Resource_Policy:
			snap.Policies = append(snap.Policies, policy(b.Policy))
		default:
			return nil, fmt.Errorf("resource %s: no body", n)
		}
	}
	if settings != 1 {
		return nil, fmt.Errorf("convert mesh config %s: %d settings resources, want 1", systemVersion, settings)
	}
	// Parse validates and builds the indexes the proxy's lookups use.
	b, err := snapshotJSON(snap)
	if err != nil {
		return nil, err
	}
	parsed, err := state.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("validate mesh config %s: %w", systemVersion, err)
	}
	return parsed, nil
}

func addrs(what string, in []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(in))
	for _, s := range in {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func port(what string, p uint32) (uint16, error) {
	if p > 65535 {
		return 0, fmt.Errorf("%s %d out of range", what, p)
	}
	return uint16(p), nil
}

func workload(w *meshv1.Workload) (state.Workload, error) {
	ips, err := addrs("ip", w.GetIps())
	if err != nil {
		return state.Workload{}, fmt.Errorf("workload %s/%s: %w", w.GetNamespace(), w.GetName(), err)
	}
	return state.Workload{
		UID: w.GetUid(), Namespace: w.GetNamespace(), Name: w.GetName(), ServiceAccount: w.GetServiceAccount(),
		Node: w.GetNode(), IPs: ips, Protocol: w.GetProtocol(), WorkloadName: w.GetWorkloadName(),
		CanonicalService: w.GetCanonicalService(), CanonicalRevision: w.GetCanonicalRevision(),
		App: w.GetApp(), Version: w.GetVersion(), Cluster: w.GetCluster(),
	}, nil
}

func service(s *meshv1.Service) (state.Service, error) {
	label := s.GetNamespace() + "/" + s.GetName()
	vips, err := addrs("vip", s.GetVips())
	if err != nil {
		return state.Service{}, fmt.Errorf("service %s: %w", label, err)
	}
	out := state.Service{Namespace: s.GetNamespace(), Name: s.GetName(), Hostname: s.GetHostname(), VIPs: vips}
	for _, p := range s.GetPorts() {
		sp, err := port("port", p.GetPort())
		if err != nil {
			return state.Service{}, fmt.Errorf("service %s: %w", label, err)
		}
		tp, err := port("target port", p.GetTargetPort())
		if err != nil {
			return state.Service{}, fmt.Errorf("service %s: %w", label, err)
		}
		out.Ports = append(out.Ports, state.ServicePort{Name: p.GetName(), Port: sp, TargetPort: tp})
	}
	for _, e := range s.GetEndpoints() {
		a, err := netip.ParseAddr(e.GetAddress())
		if err != nil {
			return state.Service{}, fmt.Errorf("service %s: endpoint %q: %w", label, e.GetAddress(), err)
		}
		ep := state.Endpoint{Address: a, WorkloadUID: e.GetWorkloadUid(), Ready: e.GetReady()}
		if len(e.GetPorts()) > 0 {
			ep.Ports = make(map[uint16]uint16, len(e.GetPorts()))
			for k, v := range e.GetPorts() {
				kp, err := port("endpoint service port", k)
				if err != nil {
					return state.Service{}, fmt.Errorf("service %s: %w", label, err)
				}
				vp, err := port("endpoint port", v)
				if err != nil {
					return state.Service{}, fmt.Errorf("service %s: %w", label, err)
				}
				ep.Ports[kp] = vp
			}
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out, nil
}

func policy(p *meshv1.Policy) state.Policy {
	out := state.Policy{
		Name:        p.GetName(),
		Destination: state.Destination{Namespace: p.GetDestination().GetNamespace(), ServiceAccount: p.GetDestination().GetServiceAccount()},
		Sources:     p.GetSources(),
		Invalid:     p.GetInvalid(),
	}
	for _, r := range p.GetRules() {
		rule := state.Rule{Kind: r.GetKind(), Name: r.GetName(), HTTP: r.GetHttp()}
		for _, pt := range r.GetPorts() {
			if pt == 0 || pt > 65535 {
				// An impossible port must not widen the rule to "every
				// port" (an empty list): keep it, validation refuses it.
				rule.Ports = append(rule.Ports, 0)
				continue
			}
			rule.Ports = append(rule.Ports, uint16(pt))
		}
		out.Rules = append(out.Rules, rule)
	}
	return out
}
