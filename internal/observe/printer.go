package observe

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weftmesh/weft/internal/flowid"
)

// Format is an output format of `weft observe`.
type Format string

// Hubble's output formats.
const (
	Compact Format = "compact" // one line per flow (the default)
	Table   Format = "table"   // aligned columns, no colours
	Dict    Format = "dict"    // one block of "KEY: value" lines per flow
	JSON    Format = "json"    // one GetFlowsResponse per line (Hubble's -o json)
)

// ParseFormat parses an --output value.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Compact, Table, Dict, JSON:
		return f, nil
	case "jsonpb":
		return JSON, nil
	}
	return "", fmt.Errorf("invalid --output %q: want compact, table, dict or json", s)
}

// PrinterOptions configure a Printer.
type PrinterOptions struct {
	Format Format
	// Color adds ANSI colours (compact and dict only; a table never has
	// them). Callers enable it only on a terminal.
	Color bool
	// NodeName prints the node that reported each flow.
	NodeName bool
	// Location is the time zone of timestamps (default: time.Local).
	Location *time.Location
}

// timeLayout is Hubble's (time.StampMilli).
const timeLayout = time.StampMilli

// Printer writes GetFlowsResponses in one format. Not safe for concurrent
// use.
type Printer struct {
	opts PrinterOptions
	w    io.Writer // flows and lost events
	werr io.Writer // node status messages
	tw   *tabwriter.Writer
	json *json.Encoder
	line int
}

// NewPrinter returns a Printer writing flows (and lost events) to w and
// node status messages to werr. Call Flush when a batch is done (a table
// is aligned per flush) and at the end.
func NewPrinter(w, werr io.Writer, opts PrinterOptions) *Printer {
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.Format == "" {
		opts.Format = Compact
	}
	p := &Printer{opts: opts, w: w, werr: werr}
	switch opts.Format {
	case Table:
		p.tw = tabwriter.NewWriter(w, 2, 0, 3, ' ', 0)
		p.opts.Color = false
	case JSON:
		p.json = json.NewEncoder(w)
		p.opts.Color = false
	}
	return p
}

// Flush writes out a table's buffered rows.
func (p *Printer) Flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

// Write prints one response: a flow, a lost-events record or a node status
// message. Lost events are always printed, in every format.
func (p *Printer) Write(res *observerpb.GetFlowsResponse) error {
	var err error
	switch res.GetResponseTypes().(type) {
	case *observerpb.GetFlowsResponse_Flow:
		err = p.writeFlow(res)
	case *observerpb.GetFlowsResponse_LostEvents:
		err = p.writeLost(res)
	case *observerpb.GetFlowsResponse_NodeStatus:
		err = p.writeNodeStatus(res)
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("write flow: %w", err)
	}
	return nil
}

func (p *Printer) ts(t *timestamppb.Timestamp) string {
	if !t.IsValid() {
		return "N/A"
	}
	return t.AsTime().In(p.opts.Location).Format(timeLayout)
}

func (p *Printer) writeFlow(res *observerpb.GetFlowsResponse) error {
	f := res.GetFlow()
	if p.opts.Format == JSON {
		return p.json.Encode(res)
	}
	src, dst := p.hostNames(f)
	typ, verdict, summary := FlowType(f), p.verdict(f), escape(Summary(f))
	switch p.opts.Format {
	case Table:
		var b strings.Builder
		if p.line == 0 {
			b.WriteString("TIMESTAMP\t")
			if p.opts.NodeName {
				b.WriteString("NODE\t")
			}
			b.WriteString("SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY\n")
		}
		b.WriteString(p.ts(f.GetTime()) + "\t")
		if p.opts.NodeName {
			b.WriteString(escape(f.GetNodeName()) + "\t")
		}
		b.WriteString(src + "\t" + dst + "\t" + typ + "\t" + verdict + "\t" + summary + "\n")
		_, err := io.WriteString(p.tw, b.String())
		p.line++
		return err
	case Dict:
		var b strings.Builder
		if p.line != 0 {
			b.WriteString(dictSeparator + "\n")
		}
		srcID, dstID := p.identities(f)
		b.WriteString("  TIMESTAMP: " + p.ts(f.GetTime()) + "\n")
		if p.opts.NodeName {
			b.WriteString("       NODE: " + escape(f.GetNodeName()) + "\n")
		}
		b.WriteString("     SOURCE: " + src + "\n")
		b.WriteString("DESTINATION: " + dst + "\n")
		b.WriteString("   IDENTITY: " + srcID + " -> " + dstID + "\n")
		b.WriteString("       TYPE: " + typ + "\n")
		b.WriteString("    VERDICT: " + verdict + "\n")
		b.WriteString("    SUMMARY: " + summary + "\n")
		_, err := io.WriteString(p.w, b.String())
		p.line++
		return err
	default: // Compact
		srcID, dstID := p.identities(f)
		node := ""
		if p.opts.NodeName {
			node = " [" + escape(f.GetNodeName()) + "]"
		}
		arrow := "->"
		switch {
		case f.GetIsReply() == nil:
			arrow = "<>" // direction unknown
		case f.GetIsReply().GetValue():
			src, dst = dst, src
			srcID, dstID = dstID, srcID
			arrow = "<-"
		}
		_, err := fmt.Fprintf(p.w, "%s%s: %s %s %s %s %s %s %s (%s)\n",
			p.ts(f.GetTime()), node, src, srcID, arrow, dst, dstID, typ, verdict, summary)
		p.line++
		return err
	}
}

const dictSeparator = "------------"

func (p *Printer) writeLost(res *observerpb.GetFlowsResponse) error {
	l := res.GetLostEvents()
	if p.opts.Format == JSON {
		return p.json.Encode(res)
	}
	src := l.GetSource().String()
	first, last := l.GetFirst(), l.GetLast()
	span := ""
	if first != nil && last != nil {
		span = fmt.Sprintf(" (first: %s, last: %s)", p.ts(first), p.ts(last))
	}
	node := res.GetNodeName()
	if node == "" {
		node = "-"
	}
	lost := p.color(red, "EVENTS LOST")
	switch p.opts.Format {
	case Table:
		var b strings.Builder
		if p.line == 0 {
			b.WriteString("TIMESTAMP\t")
			if p.opts.NodeName {
				b.WriteString("NODE\t")
			}
			b.WriteString("SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY\n")
		}
		b.WriteString(p.ts(res.GetTime()) + "\t")
		if p.opts.NodeName {
			b.WriteString(escape(node) + "\t")
		}
		fmt.Fprintf(&b, "%s\t-\tEVENTS LOST\t-\tCPU(%d) - %d%s\n", src, l.GetCpu().GetValue(), l.GetNumEventsLost(), span)
		_, err := io.WriteString(p.tw, b.String())
		p.line++
		return err
	case Dict:
		var b strings.Builder
		if p.line != 0 {
			b.WriteString(dictSeparator + "\n")
		}
		b.WriteString("  TIMESTAMP: " + p.ts(res.GetTime()) + "\n")
		if p.opts.NodeName {
			b.WriteString("       NODE: " + escape(node) + "\n")
		}
		b.WriteString("     SOURCE: " + src + "\n")
		b.WriteString("       TYPE: " + lost + "\n")
		b.WriteString("    VERDICT: -\n")
		fmt.Fprintf(&b, "    SUMMARY: CPU(%d) - %d%s\n", l.GetCpu().GetValue(), l.GetNumEventsLost(), span)
		_, err := io.WriteString(p.w, b.String())
		p.line++
		return err
	default:
		prefix := p.ts(res.GetTime())
		if p.opts.NodeName {
			prefix += " [" + escape(node) + "]"
		}
		_, err := fmt.Fprintf(p.w, "%s %s: %s CPU(%d) %d%s\n", prefix, lost, src, l.GetCpu().GetValue(), l.GetNumEventsLost(), span)
		p.line++
		return err
	}
}

func (p *Printer) writeNodeStatus(res *observerpb.GetFlowsResponse) error {
	s := res.GetNodeStatus()
	if p.opts.Format == JSON {
		return json.NewEncoder(p.werr).Encode(res)
	}
	msg := s.GetMessage()
	if msg != "" {
		msg = ": " + strconv.Quote(msg)
	}
	_, err := fmt.Fprintf(p.werr, "%s [%s]: %s %s%s\n", p.ts(res.GetTime()), escape(res.GetNodeName()),
		s.GetStateChange(), escape(strings.Join(s.GetNodeNames(), ", ")), escape(msg))
	return err
}

// hostNames are Hubble's "ns/pod:port" (or the IP) of both endpoints.
func (p *Printer) hostNames(f *flowpb.Flow) (src, dst string) {
	if f.GetIP() == nil {
		if eth := f.GetEthernet(); eth != nil {
			return p.color(cyan, escape(eth.GetSource())), p.color(cyan, escape(eth.GetDestination()))
		}
		return "", ""
	}
	srcPort, dstPort := ports(f)
	host := func(ip, port string, ep *flowpb.Endpoint, svc *flowpb.Service, names []string) string {
		h := ip
		ns := ep.GetNamespace()
		switch {
		case ep.GetPodName() != "":
			h = path.Join(ns, ep.GetPodName())
		case svc.GetName() != "":
			h = path.Join(svc.GetNamespace(), svc.GetName())
		case len(names) != 0:
			h = strings.Join(names, ",")
		}
		h = escape(h)
		if port != "" && port != "0" {
			h = net.JoinHostPort(h, p.color(yellow, port))
		}
		return p.color(cyan, h)
	}
	src = host(f.GetIP().GetSource(), srcPort, f.GetSource(), f.GetSourceService(), f.GetSourceNames())
	dst = host(f.GetIP().GetDestination(), dstPort, f.GetDestination(), f.GetDestinationService(), f.GetDestinationNames())
	return src, dst
}

func ports(f *flowpb.Flow) (string, string) {
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		return strconv.Itoa(int(l4.GetTCP().GetSourcePort())), strconv.Itoa(int(l4.GetTCP().GetDestinationPort()))
	case l4.GetUDP() != nil:
		return strconv.Itoa(int(l4.GetUDP().GetSourcePort())), strconv.Itoa(int(l4.GetUDP().GetDestinationPort()))
	case l4.GetSCTP() != nil:
		return strconv.Itoa(int(l4.GetSCTP().GetSourcePort())), strconv.Itoa(int(l4.GetSCTP().GetDestinationPort()))
	}
	return "", ""
}

// identities are the endpoints' identities as compact prints them:
// weft's SPIFFE principal where Hubble prints the numeric identity.
func (p *Printer) identities(f *flowpb.Flow) (src, dst string) {
	ext := Extensions(f)
	id := func(ep *flowpb.Endpoint, key string) string {
		s := Principal(ep)
		if s == "" {
			s, _ = ext[key].(string)
		}
		if s == "" {
			s = numericIdentity(ep.GetIdentity())
		}
		return p.color(magenta, "("+escape(s)+")")
	}
	return id(f.GetSource(), "source_principal"), id(f.GetDestination(), "destination_principal")
}

// Principal is the SPIFFE principal of an endpoint (its "weft:principal="
// label), "" when it has none.
func Principal(ep *flowpb.Endpoint) string {
	id, _ := flowid.Principal(ep.GetLabels())
	return id
}

// reservedIdentities are Cilium's reserved numeric identities' names.
var reservedIdentities = map[uint32]string{
	0: "unknown", 1: "host", 2: "world", 3: "unmanaged", 4: "health", 5: "init",
	6: "remote-node", 7: "kube-apiserver", 8: "ingress", 9: "world-ipv4", 10: "world-ipv6",
}

func numericIdentity(n uint32) string {
	if name, ok := reservedIdentities[n]; ok {
		return name
	}
	return "ID:" + strconv.FormatUint(uint64(n), 10)
}

// Extensions are weft's extra facts of a flow (a google.protobuf.Struct in
// Flow.extensions), nil when it has none.
func Extensions(f *flowpb.Flow) map[string]any {
	a := f.GetExtensions()
	if a == nil {
		return nil
	}
	var s structpb.Struct
	if err := a.UnmarshalTo(&s); err != nil {
		return nil
	}
	return s.AsMap()
}

// FlowType is Hubble's TYPE column: "http-request", "to-endpoint",
// "policy-verdict:L3-L4 INGRESS", ...
func FlowType(f *flowpb.Flow) string {
	if l7 := f.GetL7(); l7 != nil {
		proto := "l7"
		typ := strings.ToLower(l7.GetType().String())
		switch {
		case l7.GetHttp() != nil:
			proto = "http"
		case l7.GetDns() != nil:
			proto = "dns"
			typ += " " + l7.GetDns().GetObservationSource()
		}
		return proto + "-" + typ
	}
	sub := f.GetEventType().GetSubType()
	switch f.GetEventType().GetType() {
	case typeTrace:
		if sub >= 0 && int(sub) < len(traceObservationPoints) {
			return traceObservationPoints[sub]
		}
		return strconv.Itoa(int(sub))
	case typeDrop:
		return dropReason(uint8(sub))
	case typePolicyVerdict:
		return fmt.Sprintf("policy-verdict:%s %s", policyMatchType(f.GetPolicyMatchType()), f.GetTrafficDirection())
	case typeTraceSock:
		switch flowpb.SocketTranslationPoint(sub) {
		case flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD:
			return "post-xlate-fwd"
		case flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_REV:
			return "post-xlate-rev"
		case flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_PRE_DIRECTION_FWD:
			return "pre-xlate-fwd"
		case flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_PRE_DIRECTION_REV:
			return "pre-xlate-rev"
		}
		return flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_UNKNOWN.String()
	}
	return "UNKNOWN"
}

// dropReasons are Cilium's texts of the drop reasons weft reports
// (pkg/monitor/api/drop.go).
var dropReasons = map[uint8]string{
	0: "Success", 2: "Invalid packet", 133: "Policy denied", 151: "Stale or unroutable IP",
	158: "Service backend not found", 164: "Local host is unreachable", 181: "Policy denied by denylist",
	189: "Authentication required", 195: "Traffic is unencrypted", 205: "Punt to proxy",
}

func dropReason(r uint8) string {
	if s, ok := dropReasons[r]; ok {
		return s
	}
	return fmt.Sprintf("%d, 0", r)
}

func policyMatchType(m uint32) string {
	names := []string{"none", "L3-Only", "L3-L4", "L4-Only", "all", "L3-Proto", "Proto-Only"}
	if int(m) < len(names) {
		return names[m]
	}
	return "unknown"
}

// verdict is Hubble's VERDICT column.
func (p *Printer) verdict(f *flowpb.Flow) string {
	v := f.GetVerdict()
	msg := v.String()
	pv := f.GetEventType().GetType() == typePolicyVerdict
	switch v {
	case flowpb.Verdict_FORWARDED, flowpb.Verdict_REDIRECTED:
		if pv {
			msg = "ALLOWED"
		}
		return p.color(green, msg)
	case flowpb.Verdict_DROPPED, flowpb.Verdict_ERROR:
		if pv {
			msg = "DENIED"
		}
		return p.color(red, msg)
	case flowpb.Verdict_AUDIT:
		if pv {
			msg = "AUDITED"
		}
		return p.color(yellow, msg)
	case flowpb.Verdict_TRACED, flowpb.Verdict_TRANSLATED:
		return p.color(yellow, msg)
	}
	return msg
}

// Summary is Hubble's SUMMARY column: the producer's summary (weft's
// ztunnel writes "TCP Flags: FIN; 12 B sent, 34 B received in 1.5s"), else
// the one Hubble's parsers would write ("TCP Flags: SYN", "HTTP/1.1 GET
// http://…") followed by weft's connection facts from the extensions (the
// bytes and duration of a closed connection, the reason of a denied or
// reset one, Istio response flags); and the policy that denied a
// connection when the summary does not name it.
func Summary(f *flowpb.Flow) string {
	var parts []string
	if id := f.GetIpTraceId().GetTraceId(); id > 0 {
		parts = append(parts, fmt.Sprintf("IP Trace ID: %d", id))
	}
	//lint:ignore SA1019 Hubble's printers still print the summary, and weft's ztunnel writes one.
	s := f.GetSummary()
	ext := Extensions(f)
	if s == "" {
		s = hubbleSummary(f)
		if w := weftFacts(ext); w != "" {
			s = strings.TrimPrefix(s+"; "+w, "; ")
		}
	}
	if f.GetVerdict() == flowpb.Verdict_DROPPED {
		by := f.GetIngressDeniedBy()
		if f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS && len(f.GetEgressDeniedBy()) > 0 {
			by = f.GetEgressDeniedBy()
		}
		var names []string
		for _, pol := range by {
			n := pol.GetName()
			if n == "" {
				continue
			}
			if pol.GetNamespace() != "" {
				n = pol.GetNamespace() + "/" + n
			}
			if !strings.Contains(s, n) {
				names = append(names, fmt.Sprintf("%s (%s)", n, pol.GetKind()))
			}
		}
		if len(names) > 0 {
			s = strings.TrimPrefix(s+"; policy "+strings.Join(names, ", "), "; ")
		}
	}
	if s != "" {
		parts = append(parts, s)
	}
	if a := f.GetAuthType(); a != flowpb.AuthType_DISABLED {
		parts = append(parts, "Auth: "+a.String())
	}
	return strings.Join(parts, "; ")
}

// weftFacts describes the extensions of a record that has no summary.
func weftFacts(ext map[string]any) string {
	var parts []string
	switch ext["event"] {
	case "close":
		sent, _ := ext["bytes_sent"].(float64)
		recv, _ := ext["bytes_received"].(float64)
		w := fmt.Sprintf("%d B sent, %d B received", uint64(sent), uint64(recv))
		if d, ok := ext["duration_ns"].(float64); ok {
			w += " in " + time.Duration(d).Round(time.Microsecond).String()
		}
		parts = append(parts, w)
	case "deny":
		parts = append(parts, "denied")
	}
	if r, _ := ext["reason"].(string); r != "" {
		if ext["event"] == "deny" {
			parts[len(parts)-1] += ": " + r
		} else {
			parts = append(parts, r)
		}
	}
	if rf, _ := ext["response_flags"].(string); rf != "" && rf != "-" {
		parts = append(parts, "flags "+rf)
	}
	return strings.Join(parts, "; ")
}

// hubbleSummary is the summary Hubble's parsers give a flow.
func hubbleSummary(f *flowpb.Flow) string {
	if h := f.GetL7().GetHttp(); h != nil {
		req := h.GetMethod() + " " + h.GetUrl()
		switch f.GetL7().GetType() {
		case flowpb.L7FlowType_REQUEST:
			return h.GetProtocol() + " " + req
		case flowpb.L7FlowType_RESPONSE:
			return fmt.Sprintf("%s %d %dms (%s)", h.GetProtocol(), h.GetCode(), f.GetL7().GetLatencyNs()/uint64(time.Millisecond), req)
		}
		return ""
	}
	if tcp := f.GetL4().GetTCP(); tcp != nil {
		return "TCP Flags: " + tcpFlags(tcp.GetFlags())
	}
	if icmp := f.GetL4().GetICMPv4(); icmp != nil {
		return fmt.Sprintf("ICMPv4 %d(%d)", icmp.GetType(), icmp.GetCode())
	}
	if icmp := f.GetL4().GetICMPv6(); icmp != nil {
		return fmt.Sprintf("ICMPv6 %d(%d)", icmp.GetType(), icmp.GetCode())
	}
	if f.GetL4().GetUDP() != nil {
		return "UDP"
	}
	return ""
}

func tcpFlags(fl *flowpb.TCPFlags) string {
	var s []string
	for _, x := range []struct {
		on   bool
		name string
	}{
		{fl.GetSYN(), "SYN"}, {fl.GetACK(), "ACK"}, {fl.GetRST(), "RST"}, {fl.GetFIN(), "FIN"},
		{fl.GetPSH(), "PSH"}, {fl.GetURG(), "URG"}, {fl.GetECE(), "ECE"}, {fl.GetCWR(), "CWR"}, {fl.GetNS(), "NS"},
	} {
		if x.on {
			s = append(s, x.name)
		}
	}
	return strings.Join(s, ", ")
}

// ANSI colours, as Hubble's printer uses them.
const (
	red     = "31"
	green   = "32"
	yellow  = "33"
	magenta = "35"
	cyan    = "36"
)

func (p *Printer) color(c, s string) string {
	if !p.opts.Color {
		return s
	}
	return "\x1b[" + c + "m" + s + "\x1b[0m"
}

// escape neutralises terminal control characters in text that came from
// the network (pod names, URLs), as Hubble does.
var escaper = strings.NewReplacer("\x1b", "^[", "\r", `\r`)

func escape(s string) string { return escaper.Replace(s) }
