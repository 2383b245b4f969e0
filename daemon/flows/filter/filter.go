// Package filter compiles Hubble's GetFlows whitelist/blacklist
// (flow.FlowFilter) into matchers the flow server applies to its records,
// with Hubble's semantics, including Kubernetes-style label selectors that
// also accept weft's "weft:principal=<spiffe id>" labels. Filters come from
// any caller of the flow API: they are untrusted input (FuzzCompileFilter).
// It depends only on Hubble's flow types, so fuzzing it stays cheap.
package filter

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// Cilium's monitor message types, as Hubble's event_type filter sees them.
const (
	messageTypeAccessLog = 129 // L7 records
)

// matcher reports whether a flow matches.
type matcher func(*flowpb.Flow) bool

// Filter is a compiled GetFlows whitelist/blacklist pair. A flow passes when
// it matches one whitelist entry (or the whitelist is empty) and no
// blacklist entry, as in Hubble.
type Filter struct {
	whitelist, blacklist []matcher
}

// Compile compiles GetFlowsRequest filters. Errors name the bad field;
// the server answers them with InvalidArgument.
func Compile(whitelist, blacklist []*flowpb.FlowFilter) (Filter, error) {
	var f Filter
	for i, ff := range whitelist {
		m, err := compileFlowFilter(ff)
		if err != nil {
			return Filter{}, fmt.Errorf("whitelist[%d]: %w", i, err)
		}
		f.whitelist = append(f.whitelist, m)
	}
	for i, ff := range blacklist {
		m, err := compileFlowFilter(ff)
		if err != nil {
			return Filter{}, fmt.Errorf("blacklist[%d]: %w", i, err)
		}
		f.blacklist = append(f.blacklist, m)
	}
	return f, nil
}

// Match reports whether fl passes the filter.
func (f Filter) Match(fl *flowpb.Flow) bool {
	if len(f.whitelist) > 0 && !slices.ContainsFunc(f.whitelist, func(m matcher) bool { return m(fl) }) {
		return false
	}
	return !slices.ContainsFunc(f.blacklist, func(m matcher) bool { return m(fl) })
}

// compileFlowFilter compiles one FlowFilter: a flow matches when it matches
// every field that is set. A field the server cannot evaluate is an error,
// never silently ignored.
func compileFlowFilter(ff *flowpb.FlowFilter) (matcher, error) {
	var ms []matcher
	add := func(m matcher, err error) error {
		if err != nil {
			return err
		}
		ms = append(ms, m)
		return nil
	}
	var errs []error
	check := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
	}

	if v := ff.GetUuid(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetUuid()) })
	}
	if v := ff.GetEventType(); len(v) > 0 {
		ms = append(ms, eventTypeMatcher(v))
	}
	if v := ff.GetVerdict(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetVerdict()) })
	}
	if v := ff.GetDropReasonDesc(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool {
			return f.GetVerdict() == flowpb.Verdict_DROPPED && slices.Contains(v, f.GetDropReasonDesc())
		})
	}
	if v := ff.GetReply(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool {
			// As Hubble: an unknown is_reply counts as false for drops only.
			if f.GetIsReply() == nil && f.GetVerdict() != flowpb.Verdict_DROPPED {
				return false
			}
			return slices.Contains(v, f.GetIsReply().GetValue())
		})
	}
	if v := ff.GetEncrypted(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIP().GetEncrypted()) })
	}
	if v := ff.GetSourceIdentity(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool {
			return f.GetSource() != nil && slices.Contains(v, f.GetSource().GetIdentity())
		})
	}
	if v := ff.GetDestinationIdentity(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool {
			return f.GetDestination() != nil && slices.Contains(v, f.GetDestination().GetIdentity())
		})
	}
	if v := ff.GetProtocol(); len(v) > 0 {
		check("protocol", add(protocolMatcher(v)))
	}
	if v := ff.GetSourceIp(); len(v) > 0 {
		check("source_ip", add(ipMatcher(v, func(f *flowpb.Flow) string { return f.GetIP().GetSource() })))
	}
	if v := ff.GetDestinationIp(); len(v) > 0 {
		check("destination_ip", add(ipMatcher(v, func(f *flowpb.Flow) string { return f.GetIP().GetDestination() })))
	}
	if v := ff.GetSourceIpXlated(); len(v) > 0 {
		check("source_ip_xlated", add(ipMatcher(v, func(f *flowpb.Flow) string { return f.GetIP().GetSourceXlated() })))
	}
	if v := ff.GetIpVersion(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIP().GetIpVersion()) })
	}
	if v := ff.GetSourcePod(); len(v) > 0 {
		check("source_pod", add(namespacedNameMatcher(v, func(f *flowpb.Flow) (string, string) {
			return f.GetSource().GetNamespace(), f.GetSource().GetPodName()
		})))
	}
	if v := ff.GetDestinationPod(); len(v) > 0 {
		check("destination_pod", add(namespacedNameMatcher(v, func(f *flowpb.Flow) (string, string) {
			return f.GetDestination().GetNamespace(), f.GetDestination().GetPodName()
		})))
	}
	if v := ff.GetSourceService(); len(v) > 0 {
		check("source_service", add(namespacedNameMatcher(v, func(f *flowpb.Flow) (string, string) {
			return f.GetSourceService().GetNamespace(), f.GetSourceService().GetName()
		})))
	}
	if v := ff.GetDestinationService(); len(v) > 0 {
		check("destination_service", add(namespacedNameMatcher(v, func(f *flowpb.Flow) (string, string) {
			return f.GetDestinationService().GetNamespace(), f.GetDestinationService().GetName()
		})))
	}
	if v := ff.GetSourceWorkload(); len(v) > 0 {
		ms = append(ms, workloadMatcher(v, func(f *flowpb.Flow) *flowpb.Endpoint { return f.GetSource() }))
	}
	if v := ff.GetDestinationWorkload(); len(v) > 0 {
		ms = append(ms, workloadMatcher(v, func(f *flowpb.Flow) *flowpb.Endpoint { return f.GetDestination() }))
	}
	if v := ff.GetSourceClusterName(); len(v) > 0 {
		check("source_cluster_name", add(clusterMatcher(v, func(f *flowpb.Flow) string { return f.GetSource().GetClusterName() })))
	}
	if v := ff.GetDestinationClusterName(); len(v) > 0 {
		check("destination_cluster_name", add(clusterMatcher(v, func(f *flowpb.Flow) string { return f.GetDestination().GetClusterName() })))
	}
	if v := ff.GetSourceFqdn(); len(v) > 0 {
		check("source_fqdn", add(fqdnMatcher(v, func(f *flowpb.Flow) []string { return f.GetSourceNames() })))
	}
	if v := ff.GetDestinationFqdn(); len(v) > 0 {
		check("destination_fqdn", add(fqdnMatcher(v, func(f *flowpb.Flow) []string { return f.GetDestinationNames() })))
	}
	if v := ff.GetDnsQuery(); len(v) > 0 {
		check("dns_query", add(regexpMatcher(v, func(f *flowpb.Flow) (string, bool) {
			dns := f.GetL7().GetDns()
			return dns.GetQuery(), dns != nil
		})))
	}
	if v := ff.GetSourceLabel(); len(v) > 0 {
		check("source_label", add(labelMatcher(v, func(f *flowpb.Flow) []string { return f.GetSource().GetLabels() })))
	}
	if v := ff.GetDestinationLabel(); len(v) > 0 {
		check("destination_label", add(labelMatcher(v, func(f *flowpb.Flow) []string { return f.GetDestination().GetLabels() })))
	}
	if v := ff.GetNodeLabels(); len(v) > 0 {
		check("node_labels", add(labelMatcher(v, func(f *flowpb.Flow) []string { return f.GetNodeLabels() })))
	}
	if v := ff.GetSourcePort(); len(v) > 0 {
		check("source_port", add(portMatcher(v, func(l4 portGetter) uint32 { return l4.GetSourcePort() })))
	}
	if v := ff.GetDestinationPort(); len(v) > 0 {
		check("destination_port", add(portMatcher(v, func(l4 portGetter) uint32 { return l4.GetDestinationPort() })))
	}
	httpFields := len(ff.GetHttpStatusCode()) + len(ff.GetHttpMethod()) + len(ff.GetHttpPath()) + len(ff.GetHttpUrl()) + len(ff.GetHttpHeader())
	if httpFields > 0 && len(ff.GetEventType()) > 0 && !slices.ContainsFunc(ff.GetEventType(), func(t *flowpb.EventTypeFilter) bool {
		return t.GetType() == messageTypeAccessLog
	}) {
		check("http", errors.New("filtering by http fields requires the event type filter to match 'l7' events"))
	}
	if v := ff.GetHttpStatusCode(); len(v) > 0 {
		check("http_status_code", add(httpStatusMatcher(v)))
	}
	if v := ff.GetHttpMethod(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool {
			m := f.GetL7().GetHttp().GetMethod()
			return m != "" && slices.ContainsFunc(v, func(w string) bool { return strings.EqualFold(m, w) })
		})
	}
	if v := ff.GetHttpPath(); len(v) > 0 {
		check("http_path", add(regexpMatcher(v, func(f *flowpb.Flow) (string, bool) {
			u := f.GetL7().GetHttp().GetUrl()
			if u == "" {
				return "", false
			}
			uri, err := url.ParseRequestURI(u)
			if err != nil {
				return "", false
			}
			return uri.Path, true
		})))
	}
	if v := ff.GetHttpUrl(); len(v) > 0 {
		check("http_url", add(regexpMatcher(v, func(f *flowpb.Flow) (string, bool) {
			u := f.GetL7().GetHttp().GetUrl()
			return u, u != ""
		})))
	}
	if v := ff.GetHttpHeader(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool {
			return slices.ContainsFunc(f.GetL7().GetHttp().GetHeaders(), func(h *flowpb.HTTPHeader) bool {
				return slices.ContainsFunc(v, func(w *flowpb.HTTPHeader) bool {
					return w.GetKey() == h.GetKey() && w.GetValue() == h.GetValue()
				})
			})
		})
	}
	if v := ff.GetTcpFlags(); len(v) > 0 {
		ms = append(ms, tcpFlagsMatcher(v))
	}
	if v := ff.GetNodeName(); len(v) > 0 {
		check("node_name", add(nodeNameMatcher(v)))
	}
	if v := ff.GetTrafficDirection(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetTrafficDirection()) })
	}
	if v := ff.GetTraceId(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetTraceContext().GetParent().GetTraceId()) })
	}
	if v := ff.GetIpTraceId(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIpTraceId().GetTraceId()) })
	}
	if v := ff.GetInterface(); len(v) > 0 {
		ms = append(ms, func(f *flowpb.Flow) bool {
			iface := f.GetInterface()
			return iface != nil && slices.ContainsFunc(v, func(w *flowpb.NetworkInterface) bool {
				return (w.GetIndex() == 0 || w.GetIndex() == iface.GetIndex()) && (w.GetName() == "" || w.GetName() == iface.GetName())
			})
		})
	}
	if len(ff.GetExperimental().GetCelExpression()) > 0 {
		check("experimental.cel_expression", errors.New("not supported by this server"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		for _, m := range ms {
			if !m(f) {
				return false
			}
		}
		return true
	}, nil
}

func eventTypeMatcher(types []*flowpb.EventTypeFilter) matcher {
	return func(f *flowpb.Flow) bool {
		ev := f.GetEventType()
		if ev == nil {
			return false
		}
		return slices.ContainsFunc(types, func(t *flowpb.EventTypeFilter) bool {
			if t.GetType() != 0 && t.GetType() != ev.GetType() {
				return false
			}
			return !t.GetMatchSubType() || t.GetSubType() == ev.GetSubType()
		})
	}
}

func protocolMatcher(protocols []string) (matcher, error) {
	var want []string
	for _, p := range protocols {
		p = strings.ToLower(p)
		switch p {
		case "icmp", "icmpv4", "icmpv6", "tcp", "udp", "sctp", "vrrp", "igmp", "dns", "http":
			want = append(want, p)
		default:
			return nil, fmt.Errorf("unknown protocol %q", p)
		}
	}
	return func(f *flowpb.Flow) bool {
		l4, l7 := f.GetL4(), f.GetL7()
		return slices.ContainsFunc(want, func(p string) bool {
			switch p {
			case "icmp":
				return l4.GetICMPv4() != nil || l4.GetICMPv6() != nil
			case "icmpv4":
				return l4.GetICMPv4() != nil
			case "icmpv6":
				return l4.GetICMPv6() != nil
			case "tcp":
				return l4.GetTCP() != nil
			case "udp":
				return l4.GetUDP() != nil
			case "sctp":
				return l4.GetSCTP() != nil
			case "vrrp":
				return l4.GetVRRP() != nil
			case "igmp":
				return l4.GetIGMP() != nil
			case "dns":
				return l7.GetDns() != nil
			case "http":
				return l7.GetHttp() != nil
			}
			return false
		})
	}, nil
}

// ipMatcher matches exact addresses ("10.0.0.1") and CIDR ranges
// ("10.0.0.0/24").
func ipMatcher(ips []string, get func(*flowpb.Flow) string) (matcher, error) {
	var addrs []netip.Addr
	var prefixes []netip.Prefix
	for _, s := range ips {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("invalid IP prefix %q: %w", s, err)
			}
			prefixes = append(prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("invalid IP address %q: %w", s, err)
		}
		addrs = append(addrs, a)
	}
	return func(f *flowpb.Flow) bool {
		a, err := netip.ParseAddr(get(f))
		if err != nil {
			return false
		}
		return slices.Contains(addrs, a) || slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
	}, nil
}

// parseNamespacedName splits Hubble's "ns/name-prefix" syntax: "ns/" is a
// whole namespace, "/prefix" any namespace, and a bare "prefix" the
// "default" namespace (Hubble's k8s.ParseNamespaceName).
func parseNamespacedName(s string) (ns, prefix string) {
	ns, prefix, found := strings.Cut(s, "/")
	if !found {
		return "default", ns
	}
	prefix, _, _ = strings.Cut(prefix, "/")
	return ns, prefix
}

func namespacedNameMatcher(names []string, get func(*flowpb.Flow) (ns, name string)) (matcher, error) {
	type nsName struct{ ns, prefix string }
	var want []nsName
	for _, n := range names {
		if n == "" {
			return nil, errors.New("name must not be empty")
		}
		ns, prefix := parseNamespacedName(n)
		want = append(want, nsName{ns, prefix})
	}
	return func(f *flowpb.Flow) bool {
		ns, name := get(f)
		if ns == "" && name == "" {
			return false
		}
		return slices.ContainsFunc(want, func(w nsName) bool {
			return (w.ns == "" || w.ns == ns) && strings.HasPrefix(name, w.prefix)
		})
	}, nil
}

func workloadMatcher(want []*flowpb.Workload, get func(*flowpb.Flow) *flowpb.Endpoint) matcher {
	return func(f *flowpb.Flow) bool {
		return slices.ContainsFunc(get(f).GetWorkloads(), func(w *flowpb.Workload) bool {
			return slices.ContainsFunc(want, func(x *flowpb.Workload) bool {
				return (x.GetName() == "" || x.GetName() == w.GetName()) && (x.GetKind() == "" || x.GetKind() == w.GetKind())
			})
		})
	}
}

func clusterMatcher(names []string, get func(*flowpb.Flow) string) (matcher, error) {
	if slices.Contains(names, "") {
		return nil, errors.New("name must not be empty")
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(names, get(f)) }, nil
}

func regexpMatcher(patterns []string, get func(*flowpb.Flow) (string, bool)) (matcher, error) {
	var res []*regexp.Regexp
	for _, p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("invalid regular expression %q: %w", p, err)
		}
		res = append(res, re)
	}
	return func(f *flowpb.Flow) bool {
		s, ok := get(f)
		return ok && slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(s) })
	}, nil
}

type portGetter interface {
	GetSourcePort() uint32
	GetDestinationPort() uint32
}

func portMatcher(ports []string, get func(portGetter) uint32) (matcher, error) {
	var want []uint32
	for _, p := range ports {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("invalid port %q", p)
		}
		want = append(want, uint32(n))
	}
	return func(f *flowpb.Flow) bool {
		l4 := f.GetL4()
		var pg portGetter
		switch {
		case l4.GetTCP() != nil:
			pg = l4.GetTCP()
		case l4.GetUDP() != nil:
			pg = l4.GetUDP()
		case l4.GetSCTP() != nil:
			pg = l4.GetSCTP()
		default:
			return false
		}
		return slices.Contains(want, get(pg))
	}, nil
}

var (
	httpStatusFull   = regexp.MustCompile(`^[1-5][0-9]{2}$`)
	httpStatusPrefix = regexp.MustCompile(`^[1-5][0-9]?\+$`)
)

// httpStatusMatcher matches codes ("404") and prefixes ("4+", "50+").
func httpStatusMatcher(codes []string) (matcher, error) {
	var full, prefix []string
	for _, c := range codes {
		switch {
		case httpStatusFull.MatchString(c):
			full = append(full, c)
		case httpStatusPrefix.MatchString(c):
			prefix = append(prefix, strings.TrimSuffix(c, "+"))
		default:
			return nil, fmt.Errorf("invalid status code or prefix %q", c)
		}
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h.GetCode() == 0 {
			return false
		}
		code := fmt.Sprintf("%03d", h.GetCode())
		return slices.Contains(full, code) || slices.ContainsFunc(prefix, func(p string) bool { return strings.HasPrefix(code, p) })
	}, nil
}

func tcpFlagsMatcher(want []*flowpb.TCPFlags) matcher {
	return func(f *flowpb.Flow) bool {
		got := f.GetL4().GetTCP().GetFlags()
		if got == nil {
			return false
		}
		// A filter matches when every flag it sets is set in the flow.
		return slices.ContainsFunc(want, func(w *flowpb.TCPFlags) bool {
			return (!w.FIN || got.FIN) && (!w.SYN || got.SYN) && (!w.RST || got.RST) &&
				(!w.PSH || got.PSH) && (!w.ACK || got.ACK) && (!w.URG || got.URG) &&
				(!w.ECE || got.ECE) && (!w.CWR || got.CWR) && (!w.NS || got.NS)
		})
	}
}

// Hubble's FQDN and node name patterns: "*" matches any run of name
// characters; a node name pattern may start with "<cluster>/".
const fqdnRegexp = `(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)`

// defaultClusterName is the cluster of node names without one, as Cilium's.
const defaultClusterName = "default"

func appendFQDNPattern(sb *strings.Builder, pattern string) error {
	pattern = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(pattern), "."))
	switch {
	case pattern == "":
		return errors.New("empty pattern")
	case strings.HasSuffix(pattern, "."):
		return errors.New("multiple trailing dots in pattern")
	}
	for _, r := range pattern {
		switch {
		case r == '.':
			sb.WriteString(`\.`)
		case r == '*':
			sb.WriteString(`[-.0-9a-z]*`)
		case r == '-' || r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z':
			sb.WriteRune(r)
		default:
			return fmt.Errorf("invalid character %q in pattern", r)
		}
	}
	return nil
}

func fqdnMatcher(patterns []string, get func(*flowpb.Flow) []string) (matcher, error) {
	var sb strings.Builder
	sb.WriteString(`\A(?:`)
	for i, p := range patterns {
		if i > 0 {
			sb.WriteByte('|')
		}
		if err := appendFQDNPattern(&sb, p); err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	sb.WriteString(`)\z`)
	re, err := regexp.Compile(sb.String())
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool { return slices.ContainsFunc(get(f), re.MatchString) }, nil
}

func nodeNameMatcher(patterns []string) (matcher, error) {
	var sb strings.Builder
	sb.WriteString(`\A(?:`)
	for i, p := range patterns {
		if i > 0 {
			sb.WriteByte('|')
		}
		if p == "" {
			return nil, errors.New("empty pattern")
		}
		cluster, node, found := strings.Cut(p, "/")
		if !found {
			cluster, node = "", p
		} else if strings.Contains(node, "/") {
			return nil, fmt.Errorf("pattern %q: too many slashes", p)
		}
		for j, part := range []string{cluster, node} {
			if j == 1 {
				sb.WriteByte('/')
			}
			if part == "" {
				sb.WriteString(fqdnRegexp)
			} else if err := appendFQDNPattern(&sb, part); err != nil {
				return nil, fmt.Errorf("pattern %q: %w", p, err)
			}
		}
	}
	sb.WriteString(`)\z`)
	re, err := regexp.Compile(sb.String())
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		n := f.GetNodeName()
		if n == "" {
			return false
		}
		if !strings.Contains(n, "/") {
			n = defaultClusterName + "/" + n
		}
		return re.MatchString(n)
	}, nil
}
