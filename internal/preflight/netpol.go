package preflight

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Enrollment label and the HBONE port (ARCHITECTURE.md §3.1).
const (
	meshLabel   = "weft.io/mesh"
	meshEnabled = "enabled"
	hbonePort   = 15008
)

// PolicySource lists what the NetworkPolicy check needs from the API server.
// The kube implementation is newKubePolicySource; tests use a fake. Run calls
// it from one goroutine; implementations need not be safe for concurrent use.
type PolicySource interface {
	// Server names the API server, for the detail.
	Server() string
	// EnrolledNamespaces lists the namespaces labelled weft.io/mesh=enabled.
	EnrolledNamespaces(ctx context.Context) ([]string, error)
	// NetworkPolicies lists the NetworkPolicies of a namespace.
	NetworkPolicies(ctx context.Context, namespace string) ([]networkingv1.NetworkPolicy, error)
}

// HBONEGaps returns the directions ("ingress", "egress") in which np allows
// some traffic but no TCP 15008. Meshed traffic between pods travels to the
// peer's port 15008 from the pod's own IP, so the peers a policy names keep
// working but its ports must include 15008: a policy that allows app ports
// only breaks once the namespace is enrolled. A direction with no rules
// (deny all) is not a gap: it blocked the traffic before, too. Named ports
// are not resolved: a rule with only named ports does not count as allowing
// 15008.
func HBONEGaps(np *networkingv1.NetworkPolicy) []string {
	ingress, egress := policyDirections(np)
	var gaps []string
	if ingress && len(np.Spec.Ingress) > 0 && !slices.ContainsFunc(np.Spec.Ingress, func(r networkingv1.NetworkPolicyIngressRule) bool {
		return portsAllowHBONE(r.Ports)
	}) {
		gaps = append(gaps, "ingress")
	}
	if egress && len(np.Spec.Egress) > 0 && !slices.ContainsFunc(np.Spec.Egress, func(r networkingv1.NetworkPolicyEgressRule) bool {
		return portsAllowHBONE(r.Ports)
	}) {
		gaps = append(gaps, "egress")
	}
	return gaps
}

// policyDirections applies the API's defaulting of policyTypes: Ingress
// always, Egress when the policy has egress rules.
func policyDirections(np *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0
	}
	return slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress),
		slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
}

func portsAllowHBONE(ports []networkingv1.NetworkPolicyPort) bool {
	if len(ports) == 0 {
		return true // all ports
	}
	for _, p := range ports {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if p.Port == nil {
			return true // all TCP ports
		}
		if p.Port.Type != 0 { // named port
			continue
		}
		lo, hi := p.Port.IntVal, p.Port.IntVal
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if lo <= hbonePort && hbonePort <= hi {
			return true
		}
	}
	return false
}

// checkNetworkPolicies warns about NetworkPolicies in enrolled namespaces
// that would block HBONE. src nil means no cluster access (skip).
func checkNetworkPolicies(ctx context.Context, src PolicySource) Result {
	r := Result{Name: "networkpolicy"}
	if src == nil {
		r.Status, r.Detail = StatusSkip, "no cluster access"
		r.Hint = "pass --kubeconfig to check NetworkPolicies of enrolled namespaces"
		return r
	}
	unreachable := func(err error) Result {
		r.Status, r.Detail = StatusWarn, fmt.Sprintf("API server %s: %v", src.Server(), oneLine(err.Error()))
		r.Hint = "check --kubeconfig and that it may list namespaces and networkpolicies"
		return r
	}
	namespaces, err := src.EnrolledNamespaces(ctx)
	if err != nil {
		return unreachable(err)
	}
	var total int
	var gaps []string
	for _, ns := range namespaces {
		policies, err := src.NetworkPolicies(ctx, ns)
		if err != nil {
			return unreachable(err)
		}
		total += len(policies)
		for i := range policies {
			if g := HBONEGaps(&policies[i]); len(g) > 0 {
				gaps = append(gaps, fmt.Sprintf("%s/%s (%s)", ns, policies[i].Name, strings.Join(g, ", ")))
			}
		}
	}
	slices.Sort(gaps)
	scope := fmt.Sprintf("%d enrolled %s, %d %s",
		len(namespaces), plural(len(namespaces), "namespace", "namespaces"), total, plural(total, "NetworkPolicy", "NetworkPolicies"))
	if len(gaps) == 0 {
		r.Status, r.Detail = StatusPass, scope+": none blocks TCP 15008 (HBONE)"
		return r
	}
	r.Status = StatusWarn
	r.Detail = fmt.Sprintf("%s; %d would block TCP 15008 (HBONE): %s", scope, len(gaps), strings.Join(gaps, ", "))
	r.Hint = "add TCP port 15008 to the rules of these policies (same peers): meshed traffic arrives on 15008"
	return r
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
