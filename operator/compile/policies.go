package compile

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/api/smi"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	"github.com/weftmesh/weft/internal/spiffe"
)

// reasonInvalidSubject (Accepted=False): a destination or source names no
// ServiceAccount there could be (an empty or upper-case name, a port
// outside 1–65535), which the CRD schema does not catch. It belongs with
// the other reasons in api/smi; it is here until that package has it.
const reasonInvalidSubject = "InvalidSubject"

// policy is one compiled TrafficTarget.
type policy struct {
	nsName nsName
	body   *meshv1.Policy
}

// routeIndex holds one compilation's route objects by namespace/name, and
// what is wrong with each HTTPRouteGroup ("" when nothing), computed once
// however many TrafficTargets use the group.
type routeIndex struct {
	tcp       map[nsName]*specsv1alpha4.TCPRoute
	http      map[nsName]*specsv1alpha4.HTTPRouteGroup
	httpError map[*specsv1alpha4.HTTPRouteGroup]string
}

// policies compiles every TrafficTarget not being deleted into a Policy,
// sorted by namespace/name, and the Accepted condition each should carry.
//
// A TrafficTarget weft cannot enforce as written (a rule or subject kind
// weft does not support, a route object or match that does not exist, a
// match that is not valid) compiles to a Policy with invalid set: it
// selects its destination and allows nothing, so nothing is silently
// half-applied. The exception is a destination in another namespace: such
// a target compiles to no Policy at all, since an invalid one would deny
// access to a ServiceAccount its author has no say over.
func (c *pass) policies() ([]*policy, map[nsName]metav1.Condition) {
	routes := &routeIndex{
		tcp:       make(map[nsName]*specsv1alpha4.TCPRoute, len(c.in.TCPRoutes)),
		http:      make(map[nsName]*specsv1alpha4.HTTPRouteGroup, len(c.in.HTTPRouteGroups)),
		httpError: make(map[*specsv1alpha4.HTTPRouteGroup]string),
	}
	for _, r := range c.in.TCPRoutes {
		k := key(r.Namespace, r.Name)
		if o := routes.tcp[k]; r.DeletionTimestamp == nil && (o == nil || r.UID < o.UID) {
			routes.tcp[k] = r
		}
	}
	for _, g := range c.in.HTTPRouteGroups {
		k := key(g.Namespace, g.Name)
		if o := routes.http[k]; g.DeletionTimestamp == nil && (o == nil || g.UID < o.UID) {
			routes.http[k] = g
		}
	}

	tts := make([]*accessv1alpha3.TrafficTarget, 0, len(c.in.TrafficTargets))
	for _, tt := range c.in.TrafficTargets {
		if tt.DeletionTimestamp == nil && validKey(tt.Namespace, tt.Name) {
			tts = append(tts, tt)
		}
	}
	slices.SortFunc(tts, func(a, b *accessv1alpha3.TrafficTarget) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		// The same object twice is no real state; keep one, whatever
		// the input order.
		if c := strings.Compare(string(a.UID), string(b.UID)); c != 0 {
			return c
		}
		return strings.Compare(a.ResourceVersion, b.ResourceVersion)
	})
	tts = slices.CompactFunc(tts, func(a, b *accessv1alpha3.TrafficTarget) bool {
		return a.Namespace == b.Namespace && a.Name == b.Name
	})

	out := make([]*policy, 0, len(tts))
	accepted := make(map[nsName]metav1.Condition, len(tts))
	for _, tt := range tts {
		k := key(tt.Namespace, tt.Name)
		body, cond := c.compileTarget(tt, routes)
		cond.Type = smi.ConditionAccepted
		cond.ObservedGeneration = tt.Generation
		accepted[k] = cond
		if body != nil {
			out = append(out, &policy{nsName: k, body: body})
		}
	}
	return out, accepted
}

// problem is why a TrafficTarget is not accepted.
type problem struct {
	reason, message string
}

func (c *pass) compileTarget(tt *accessv1alpha3.TrafficTarget, routes *routeIndex) (*meshv1.Policy, metav1.Condition) {
	name := tt.Namespace + "/" + tt.Name
	dst := tt.Spec.Destination
	dstNS := dst.Namespace
	if dstNS == "" {
		dstNS = tt.Namespace
	}
	switch {
	case dst.Name == "":
		// No destination to select: a Policy without one would make
		// nodes refuse the whole set.
		return nil, rejected(problem{reasonInvalidSubject, "spec.destination.name is empty: the TrafficTarget selects no ServiceAccount and grants nothing"})
	case dstNS != tt.Namespace:
		return nil, rejected(problem{smi.ReasonCrossNamespaceDestination, fmt.Sprintf(
			"spec.destination is ServiceAccount %s/%s, in namespace %s, not %s: only a TrafficTarget in %s can open access to it, so this one grants nothing",
			dstNS, dst.Name, dstNS, tt.Namespace, dstNS)})
	}
	body := &meshv1.Policy{
		Name:        validUTF8(name),
		Destination: &meshv1.Destination{Namespace: dstNS, ServiceAccount: validUTF8(dst.Name)},
	}
	prob, http := c.compileSpec(tt, body, routes)
	if prob != nil {
		msg := prob.message + "; the TrafficTarget allows nothing until this is fixed"
		// Selects its destination, allows nothing.
		invalid := &meshv1.Policy{Name: body.Name, Destination: body.Destination, Invalid: validUTF8(prob.message)}
		return invalid, rejected(problem{prob.reason, msg})
	}
	dstLabel := "ServiceAccount " + dstNS + "/" + dst.Name
	if len(http) > 0 {
		verb, pronoun := " matches", "it denies"
		if len(http) > 1 {
			verb, pronoun = " match", "they deny"
		}
		msg := strings.Join(http, ", ") + verb + " HTTP requests, which only a waypoint can enforce, and namespace " +
			dstNS + " has no waypoint: " + pronoun + " until one runs"
		if len(http) < len(body.Rules) {
			msg += "; the TCPRoute rules are enforced"
		}
		return body, rejected(problem{smi.ReasonWaypointRequired, msg})
	}
	return body, metav1.Condition{
		Status:  metav1.ConditionTrue,
		Reason:  smi.ReasonAccepted,
		Message: "enforced as written: " + plural(len(body.Sources), "source") + " may reach " + dstLabel + " by " + plural(len(body.Rules), "rule"),
	}
}

// compileSpec fills body's sources and rules from tt's spec. It returns
// the first problem that keeps tt from being enforced as written, or the
// rules (as "spec.rules[i] (HTTPRouteGroup name)") that need a waypoint.
func (c *pass) compileSpec(tt *accessv1alpha3.TrafficTarget, body *meshv1.Policy, routes *routeIndex) (*problem, []string) {
	dst := tt.Spec.Destination
	if dst.Kind != accessv1alpha3.KindServiceAccount {
		return &problem{smi.ReasonUnsupportedKind, fmt.Sprintf("spec.destination has kind %q; weft supports only %s", dst.Kind, accessv1alpha3.KindServiceAccount)}, nil
	}
	if !validSegment(dst.Name) {
		return &problem{reasonInvalidSubject, fmt.Sprintf("spec.destination.name %q is not a ServiceAccount name (lower-case letters, digits, '-' and '.')", dst.Name)}, nil
	}
	var dstPort uint32
	if dst.Port != nil {
		if !validPort(*dst.Port) {
			return &problem{reasonInvalidSubject, fmt.Sprintf("spec.destination.port %d is not in 1-65535", *dst.Port)}, nil
		}
		dstPort = uint32(*dst.Port)
	}

	for i, s := range tt.Spec.Sources {
		field := "spec.sources[" + strconv.Itoa(i) + "]"
		if s.Kind != accessv1alpha3.KindServiceAccount {
			return &problem{smi.ReasonUnsupportedKind, fmt.Sprintf("%s has kind %q; weft supports only %s", field, s.Kind, accessv1alpha3.KindServiceAccount)}, nil
		}
		ns := s.Namespace
		if ns == "" {
			ns = tt.Namespace
		}
		id, err := spiffe.NewID(c.trustDomain, ns, s.Name)
		if err != nil {
			return &problem{reasonInvalidSubject, fmt.Sprintf("%s (%s/%s) is not a ServiceAccount name (lower-case letters, digits, '-' and '.')", field, ns, s.Name)}, nil
		}
		body.Sources = append(body.Sources, id.String())
	}
	// Sources are ORed: their order and repetitions mean nothing, and
	// must not change the version.
	slices.Sort(body.Sources)
	body.Sources = slices.Compact(body.Sources)

	var http []string
	for i, r := range tt.Spec.Rules {
		field := "spec.rules[" + strconv.Itoa(i) + "]"
		var rule *meshv1.Rule
		switch r.Kind {
		case accessv1alpha3.KindTCPRoute:
			route := routes.tcp[key(tt.Namespace, r.Name)]
			if route == nil {
				return &problem{smi.ReasonRouteNotFound, fmt.Sprintf("%s: TCPRoute %q does not exist in namespace %s (route objects are looked up in the TrafficTarget's namespace)", field, r.Name, tt.Namespace)}, nil
			}
			for _, m := range r.Matches {
				if m != route.Spec.Matches.Name {
					return &problem{smi.ReasonMatchNotFound, fmt.Sprintf("%s: TCPRoute %q has no match named %q (its match is named %q)", field, r.Name, m, route.Spec.Matches.Name)}, nil
				}
			}
			ports := make([]uint32, 0, len(route.Spec.Matches.Ports))
			for _, p := range route.Spec.Matches.Ports {
				if !validPort(p) {
					return &problem{smi.ReasonInvalidMatch, fmt.Sprintf("%s: TCPRoute %q lists port %d, not in 1-65535", field, r.Name, p)}, nil
				}
				ports = append(ports, uint32(p))
			}
			slices.Sort(ports)
			rule = &meshv1.Rule{Kind: string(r.Kind), Name: validUTF8(r.Name), Ports: slices.Compact(ports)}
		case accessv1alpha3.KindHTTPRouteGroup:
			group := routes.http[key(tt.Namespace, r.Name)]
			if group == nil {
				return &problem{smi.ReasonRouteGroupNotFound, fmt.Sprintf("%s: HTTPRouteGroup %q does not exist in namespace %s (route objects are looked up in the TrafficTarget's namespace)", field, r.Name, tt.Namespace)}, nil
			}
			if msg := routes.groupError(group); msg != "" {
				return &problem{smi.ReasonInvalidMatch, fmt.Sprintf("%s: HTTPRouteGroup %q: %s", field, r.Name, msg)}, nil
			}
			for _, m := range r.Matches {
				if !slices.ContainsFunc(group.Spec.Matches, func(gm specsv1alpha4.HTTPMatch) bool { return gm.Name == m }) {
					return &problem{smi.ReasonMatchNotFound, fmt.Sprintf("%s: HTTPRouteGroup %q has no match named %q (it has %s)", field, r.Name, m, matchNames(group))}, nil
				}
			}
			// The matches the rule allows (all of the group's when it
			// names none) are a waypoint's to enforce; at L4 the rule
			// denies, so the Rule carries only that it is HTTP.
			rule = &meshv1.Rule{Kind: string(r.Kind), Name: validUTF8(r.Name), Http: true}
			http = append(http, field+" (HTTPRouteGroup "+r.Name+")")
		default:
			return &problem{smi.ReasonUnsupportedKind, fmt.Sprintf("%s has kind %q; weft supports %s and %s", field, r.Kind, accessv1alpha3.KindTCPRoute, accessv1alpha3.KindHTTPRouteGroup)}, nil
		}
		if dstPort != 0 {
			// The destination's port narrows every rule to that port; a
			// rule whose ports exclude it allows nothing and is dropped.
			if len(rule.Ports) > 0 && !slices.Contains(rule.Ports, dstPort) {
				continue
			}
			rule.Ports = []uint32{dstPort}
		}
		body.Rules = append(body.Rules, rule)
	}
	return nil, http
}

// groupError says why g's matches cannot be enforced ("" when they can):
// a path or header expression that is not a valid RE2 regular expression.
func (x *routeIndex) groupError(g *specsv1alpha4.HTTPRouteGroup) string {
	if msg, ok := x.httpError[g]; ok {
		return msg
	}
	msg := ""
	for _, m := range g.Spec.Matches {
		if m.PathRegex != "" {
			if _, err := regexp.Compile(m.PathRegex); err != nil {
				msg = fmt.Sprintf("match %q: pathRegex %q is not a valid RE2 regular expression: %v", m.Name, m.PathRegex, err)
				break
			}
		}
		hdrs := make([]string, 0, len(m.Headers))
		for h := range m.Headers {
			hdrs = append(hdrs, h)
		}
		slices.Sort(hdrs) // the first bad header, whatever the map order
		for _, h := range hdrs {
			if _, err := regexp.Compile(m.Headers[h]); err != nil {
				msg = fmt.Sprintf("match %q: header %q: %q is not a valid RE2 regular expression: %v", m.Name, h, m.Headers[h], err)
				break
			}
		}
		if msg != "" {
			break
		}
	}
	x.httpError[g] = msg
	return msg
}

func matchNames(g *specsv1alpha4.HTTPRouteGroup) string {
	names := make([]string, len(g.Spec.Matches))
	for i, m := range g.Spec.Matches {
		names[i] = strconv.Quote(m.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func rejected(p problem) metav1.Condition {
	return metav1.Condition{Status: metav1.ConditionFalse, Reason: p.reason, Message: validUTF8(p.message)}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
