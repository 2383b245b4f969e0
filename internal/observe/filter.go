package observe

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/flowid"
)

// Filters are the flow filters of `weft observe`, as the user typed them.
// Values of one flag are ORed, different flags are ANDed; flags that name
// either endpoint (--pod, --namespace, --identity, --port) match a flow
// when either its source or its destination matches, like Hubble's.
type Filters struct {
	Namespaces []string // either endpoint's namespace
	Pods       []string // either endpoint's pod: [ns/]name prefix
	FromPods   []string // the source pod
	ToPods     []string // the destination pod
	Identities []string // either endpoint's identity: a SPIFFE ID, or ns/serviceaccount
	Verdicts   []string // FORWARDED, DROPPED, ...
	Ports      []string // either endpoint's port
	Protocols  []string // tcp, udp, http, ...
	HTTPStatus []string // 200, 5+, ...
	HTTPMethod []string
	HTTPPath   []string // regular expressions
	Types      []string // trace, l7, drop, policy-verdict, 4, trace:to-endpoint, ...

	// TrustDomain completes ns/serviceaccount identities into SPIFFE IDs.
	TrustDomain string
}

// FlowFilters returns the whitelist the filters mean: nil when there is no
// filter, else one or two FlowFilters (source side OR destination side).
func (f Filters) FlowFilters() ([]*flowpb.FlowFilter, error) {
	left, right := &flowpb.FlowFilter{}, &flowpb.FlowFilter{}
	both := func(update func(*flowpb.FlowFilter)) { update(left); update(right) }
	set := false

	for _, v := range f.Verdicts {
		vv, ok := flowpb.Verdict_value[strings.ToUpper(v)]
		if !ok || vv == 0 {
			return nil, fmt.Errorf("invalid --verdict %q: want one of %s", v, strings.Join(verdictNames(), ", "))
		}
		both(func(ff *flowpb.FlowFilter) { ff.Verdict = append(ff.Verdict, flowpb.Verdict(vv)) })
		set = true
	}
	for _, p := range f.Protocols {
		if p == "" {
			return nil, fmt.Errorf("invalid --protocol: empty")
		}
		both(func(ff *flowpb.FlowFilter) { ff.Protocol = append(ff.Protocol, strings.ToLower(p)) })
		set = true
	}
	for _, s := range f.HTTPStatus {
		if err := validHTTPStatus(s); err != nil {
			return nil, err
		}
		both(func(ff *flowpb.FlowFilter) { ff.HttpStatusCode = append(ff.HttpStatusCode, s) })
		set = true
	}
	for _, m := range f.HTTPMethod {
		both(func(ff *flowpb.FlowFilter) { ff.HttpMethod = append(ff.HttpMethod, strings.ToUpper(m)) })
		set = true
	}
	for _, p := range f.HTTPPath {
		both(func(ff *flowpb.FlowFilter) { ff.HttpPath = append(ff.HttpPath, p) })
		set = true
	}
	for _, t := range f.Types {
		tf, err := parseType(t)
		if err != nil {
			return nil, err
		}
		both(func(ff *flowpb.FlowFilter) { ff.EventType = append(ff.EventType, tf) })
		set = true
	}
	for _, p := range f.Ports {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("invalid --port %q: want a port number", p)
		}
		left.SourcePort = append(left.SourcePort, p)
		right.DestinationPort = append(right.DestinationPort, p)
		set = true
	}
	for _, id := range f.Identities {
		spiffe, err := f.spiffeID(id)
		if err != nil {
			return nil, err
		}
		// The numeric identity weft derives from the SPIFFE ID: Hubble's
		// label selectors (in Hubble's own servers) cannot hold a SPIFFE
		// ID as a value, identity filters work everywhere.
		n := flowid.Identity(spiffe)
		left.SourceIdentity = append(left.SourceIdentity, n)
		right.DestinationIdentity = append(right.DestinationIdentity, n)
		set = true
	}

	// Pods, completed with the namespaces like Hubble's: a pod name without
	// a namespace is looked up in each --namespace, and --namespace alone
	// means every pod of those namespaces ("ns/").
	pods := func(names []string) ([]string, error) {
		var out []string
		for _, n := range names {
			if n == "" {
				return nil, fmt.Errorf("invalid pod filter: empty")
			}
			ns, _, found := strings.Cut(n, "/")
			switch {
			case found && len(f.Namespaces) > 0 && !slices.Contains(f.Namespaces, ns):
				return nil, fmt.Errorf("pod %q is in none of the namespaces %q", n, f.Namespaces)
			case found || len(f.Namespaces) == 0:
				out = append(out, n)
			default:
				for _, ns := range f.Namespaces {
					out = append(out, ns+"/"+n)
				}
			}
		}
		return out, nil
	}
	for _, ns := range f.Namespaces {
		if ns == "" || strings.Contains(ns, "/") {
			return nil, fmt.Errorf("invalid --namespace %q", ns)
		}
	}
	either, err := pods(f.Pods)
	if err != nil {
		return nil, err
	}
	from, err := pods(f.FromPods)
	if err != nil {
		return nil, err
	}
	to, err := pods(f.ToPods)
	if err != nil {
		return nil, err
	}
	nsOnly := make([]string, len(f.Namespaces))
	for i, ns := range f.Namespaces {
		nsOnly[i] = ns + "/"
	}
	switch {
	case len(from) > 0 || len(to) > 0:
		// Directed pods: both sides carry them; --pod still names the
		// other end, --namespace only completes pod names.
		both(func(ff *flowpb.FlowFilter) {
			ff.SourcePod = append(ff.SourcePod, from...)
			ff.DestinationPod = append(ff.DestinationPod, to...)
		})
		if len(either) > 0 {
			if len(from) == 0 {
				left.SourcePod = append(left.SourcePod, either...)
			} else if len(to) == 0 {
				right.DestinationPod = append(right.DestinationPod, either...)
			} else {
				return nil, fmt.Errorf("--pod cannot be combined with both --from-pod and --to-pod")
			}
		}
		set = true
	case len(either) > 0:
		left.SourcePod = append(left.SourcePod, either...)
		right.DestinationPod = append(right.DestinationPod, either...)
		set = true
	case len(f.Namespaces) > 0:
		left.SourcePod = append(left.SourcePod, nsOnly...)
		right.DestinationPod = append(right.DestinationPod, nsOnly...)
		set = true
	}

	if !set {
		return nil, nil
	}
	if proto.Equal(left, right) {
		return []*flowpb.FlowFilter{left}, nil
	}
	return []*flowpb.FlowFilter{left, right}, nil
}

// spiffeID completes an --identity value into a SPIFFE ID.
func (f Filters) spiffeID(id string) (string, error) {
	if strings.HasPrefix(id, "spiffe://") {
		if len(id) == len("spiffe://") {
			return "", fmt.Errorf("invalid --identity %q: no trust domain", id)
		}
		return id, nil
	}
	ns, sa, ok := strings.Cut(id, "/")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, "/") {
		return "", fmt.Errorf("invalid --identity %q: want a SPIFFE ID (spiffe://…) or namespace/serviceaccount", id)
	}
	td := f.TrustDomain
	if td == "" {
		td = "cluster.local"
	}
	return "spiffe://" + td + "/ns/" + ns + "/sa/" + sa, nil
}

func verdictNames() []string {
	var names []string
	for v := int32(1); ; v++ {
		n, ok := flowpb.Verdict_name[v]
		if !ok {
			return names
		}
		names = append(names, n)
	}
}

// validHTTPStatus accepts what Hubble's server does: a code (200) or a
// class prefix (5+, 40+).
func validHTTPStatus(s string) error {
	digits, class := strings.CutSuffix(s, "+")
	n := len(digits)
	_, err := strconv.ParseUint(digits, 10, 16)
	if err != nil || class && (n < 1 || n > 2) || !class && n != 3 {
		return fmt.Errorf("invalid --http-status %q: want a code (404) or a class (5+, 40+)", s)
	}
	return nil
}

// Hubble's event type numbers and names (pkg/monitor/api).
const (
	typeDrop          = 1
	typeTrace         = 4
	typePolicyVerdict = 5
	typeTraceSock     = 7
	typeL7            = 129
	typeAgent         = 130
)

var typeNames = map[string]int32{
	"drop": typeDrop, "debug": 2, "capture": 3, "trace": typeTrace,
	"policy-verdict": typePolicyVerdict, "trace-sock": typeTraceSock, "l7": typeL7, "agent": typeAgent,
}

var traceObservationPoints = []string{
	"to-endpoint", "to-proxy", "to-host", "to-stack", "to-overlay",
	"from-endpoint", "from-proxy", "from-host", "from-stack", "from-overlay",
	"from-network", "to-network", "from-crypto", "to-crypto",
}

// parseType parses a --type value: a type name or number, optionally
// ":subtype" (a trace observation point name, or a number).
func parseType(v string) (*flowpb.EventTypeFilter, error) {
	name, sub, hasSub := strings.Cut(v, ":")
	t, ok := typeNames[name]
	if !ok {
		n, err := strconv.ParseUint(name, 10, 8)
		if err != nil {
			return nil, fmt.Errorf("invalid --type %q: want a number or one of drop, trace, policy-verdict, trace-sock, l7, agent, debug, capture", v)
		}
		t = int32(n)
	}
	tf := &flowpb.EventTypeFilter{Type: t}
	if hasSub {
		i := slices.Index(traceObservationPoints, sub)
		if t != typeTrace || i < 0 {
			n, err := strconv.ParseUint(sub, 10, 8)
			if err != nil {
				return nil, fmt.Errorf("invalid --type %q: unknown sub-type %q", v, sub)
			}
			i = int(n)
		}
		tf.MatchSubType, tf.SubType = true, int32(i)
	}
	return tf, nil
}
