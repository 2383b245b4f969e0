//lint:file-ignore SA1019 Hubble clients still print Flow.Summary (the hubble CLI's SUMMARY column) and older ones read drop_reason.

package telemetry

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/flowid"
	"github.com/weftmesh/weft/ztunnel/state"
)

// FlowSink receives the Hubble flow records of the connections Metrics
// records (the node's flow exporter, ztunnel/flowexport). Record must not
// block and owns the record it is given.
type FlowSink interface {
	Record(f *flow.Flow)
}

// SetFlowSink makes m hand a flow record to s for every connection opened,
// closed or denied (api/flows/v1): open and close records for a proxied
// connection, a deny record for one that policy refused. Call it before the
// first connection; nil (the default) produces no records.
func (m *Metrics) SetFlowSink(s FlowSink) { m.flows = s }

// Flow-record constants (api/flows/v1, ARCHITECTURE.md §7).
const (
	// EmitterName is the Emitter of every record ztunnel produces.
	EmitterName = "weft-ztunnel"
	// Cilium's monitor message types (pkg/monitor/api), Hubble's
	// CiliumEventType.type: a trace for L4 events, a drop for denials.
	messageTypeDrop  = 1
	messageTypeTrace = 4
	// Cilium's trace observation points, Hubble's CiliumEventType.sub_type
	// of a trace: an outbound connection is redirected to the proxy; an
	// inbound one is delivered to the pod.
	traceToEndpoint = 0
	traceToProxy    = 1
	// worldIdentity is Cilium's reserved identity of peers outside the
	// cluster ("reserved:world"): a peer with neither identity nor
	// workload.
	worldIdentity = 2
	worldLabel    = "reserved:world"
	// policyKind is the kind of the policies that deny connections.
	policyKind = "TrafficTarget"
	// ShutdownReason is the reason of connections cut by the proxy's
	// shutdown.
	ShutdownReason = "ztunnel shutting down"
)

// Extension keys of Flow.extensions (api/flows/v1/flows.proto).
const (
	extEvent                = "event"
	extSourcePrincipal      = "source_principal"
	extDestinationPrincipal = "destination_principal"
	extBytesSent            = "bytes_sent"
	extBytesReceived        = "bytes_received"
	extDurationNs           = "duration_ns"
	extReason               = "reason"
	extResponseFlags        = "response_flags"
)

// Events of the extension "event".
const (
	eventOpen  = "open"
	eventClose = "close"
	eventDeny  = "deny"
)

func (m *Metrics) flowOpen(c *Conn) {
	// The close record describes the same ends: computed once, shared by
	// both records (which nobody modifies once made).
	c.srcEP, c.dstEP = endpoint(&c.info.Source), endpoint(&c.info.Destination)
	f := baseFlow(&c.info, c.start, c.srcEP, c.dstEP)
	f.Verdict = flow.Verdict_FORWARDED
	f.L4 = tcpLayer(&c.info, &flow.TCPFlags{SYN: true})
	f.Summary = "TCP Flags: SYN"
	f.Extensions = extensions(&c.info, eventOpen, nil)
	m.flows.Record(f)
}

// flowClose records c's end: FIN for a clean end, RST with err as the
// reason when an error or a policy change ended it.
func (m *Metrics) flowClose(c *Conn, flags ResponseFlags, err error, end time.Time) {
	f := baseFlow(&c.info, end, c.srcEP, c.dstEP)
	f.Verdict = flow.Verdict_FORWARDED
	d := end.Sub(c.start)
	// Bytes from the source's point of view: what the client sent toward
	// the server is what Istio calls received.
	sent, recv := c.recv.Load(), c.sent.Load()
	tcpFlags := &flow.TCPFlags{FIN: true}
	extra := map[string]any{
		extBytesSent:     float64(sent),
		extBytesReceived: float64(recv),
		extDurationNs:    float64(d.Nanoseconds()),
	}
	summary := fmt.Sprintf("TCP Flags: FIN; %d B sent, %d B received in %s", sent, recv, d.Round(time.Microsecond))
	if err != nil || flags.value() != string(FlagNone) {
		tcpFlags = &flow.TCPFlags{RST: true}
		reason := string(flags)
		if err != nil {
			reason = err.Error()
		}
		extra[extReason] = reason
		summary = fmt.Sprintf("TCP Flags: RST; %d B sent, %d B received in %s; %s", sent, recv, d.Round(time.Microsecond), valid(reason))
	}
	if f := flags.value(); f != string(FlagNone) {
		extra[extResponseFlags] = f
	}
	f.L4 = tcpLayer(&c.info, tcpFlags)
	f.Summary = summary
	f.Extensions = extensions(&c.info, eventClose, extra)
	m.flows.Record(f)
}

// flowDenied records a connection refused by policy: policy is the deciding
// TrafficTarget as "namespace/name" (anything without a "/", like the
// strict mode's "strict-mode", names no policy) and reason says why.
func (m *Metrics) flowDenied(info *ConnInfo, policy, reason string) {
	f := baseFlow(info, m.now(), endpoint(&info.Source), endpoint(&info.Destination))
	f.Verdict = flow.Verdict_DROPPED
	f.DropReason = uint32(flow.DropReason_POLICY_DENIED)
	f.DropReasonDesc = flow.DropReason_POLICY_DENIED
	f.EventType = &flow.CiliumEventType{Type: messageTypeDrop, SubType: int32(flow.DropReason_POLICY_DENIED)}
	f.TraceObservationPoint = flow.TraceObservationPoint_UNKNOWN_POINT
	if ns, name, ok := strings.Cut(policy, "/"); ok && ns != "" && name != "" {
		p := &flow.Policy{Kind: policyKind, Namespace: valid(ns), Name: valid(name)}
		// The destination's policy decided, wherever this proxy sits.
		f.IngressDeniedBy = []*flow.Policy{p}
	}
	f.L4 = tcpLayer(info, &flow.TCPFlags{SYN: true})
	f.Summary = "TCP Flags: SYN; denied: " + valid(reason)
	extra := map[string]any{extReason: reason, extResponseFlags: string(FlagDenied)}
	f.Extensions = extensions(info, eventDeny, extra)
	m.flows.Record(f)
}

// baseFlow fills what every record of the connection info describes; src
// and dst are its ends' endpoints.
func baseFlow(info *ConnInfo, t time.Time, src, dst *flow.Endpoint) *flow.Flow {
	f := &flow.Flow{
		Time:        timestamppb.New(t),
		Emitter:     &flow.Emitter{Name: EmitterName},
		Type:        flow.FlowType_L3_L4,
		IP:          ipLayer(sourceIP(info), appAddr(info).Addr(), info.MutualTLS),
		Source:      src,
		Destination: dst,
		IsReply:     wrapperspb.Bool(false),
	}
	switch info.Reporter {
	case ReporterSource:
		f.TrafficDirection = flow.TrafficDirection_EGRESS
		f.EventType = &flow.CiliumEventType{Type: messageTypeTrace, SubType: traceToProxy}
		f.TraceObservationPoint = flow.TraceObservationPoint_TO_PROXY
	case ReporterDestination:
		f.TrafficDirection = flow.TrafficDirection_INGRESS
		f.EventType = &flow.CiliumEventType{Type: messageTypeTrace, SubType: traceToEndpoint}
		f.TraceObservationPoint = flow.TraceObservationPoint_TO_ENDPOINT
	default:
		f.EventType = &flow.CiliumEventType{Type: messageTypeTrace}
	}
	if svc := info.Service; svc != nil {
		f.DestinationService = &flow.Service{Name: valid(svc.Name), Namespace: valid(svc.Namespace)}
		if svc.Hostname != "" {
			f.DestinationNames = []string{valid(svc.Hostname)}
		}
	}
	return f
}

// sourceIP is the client's pod address. On the outbound side the proxy sees
// the app's redirected connection come from loopback inside the pod's netns;
// the pod's own address is what the network (and a reader) knows it by.
func sourceIP(info *ConnInfo) netip.Addr {
	a := info.Source.Addr.Addr()
	if a.IsLoopback() && info.Source.Workload != nil && len(info.Source.Workload.IPs) > 0 {
		return info.Source.Workload.IPs[0]
	}
	return a
}

// sourceAddr is sourceIP with the connection's source port.
func sourceAddr(info *ConnInfo) netip.AddrPort {
	if !info.Source.Addr.IsValid() {
		return info.Source.Addr
	}
	return netip.AddrPortFrom(sourceIP(info), info.Source.Addr.Port())
}

// appAddr is the destination as the client addressed it after service
// resolution: the pod's app port, not the HBONE listener carrying it.
func appAddr(info *ConnInfo) netip.AddrPort {
	if info.HBONEAddr.IsValid() {
		return info.HBONEAddr
	}
	return info.Destination.Addr
}

func ipLayer(src, dst netip.Addr, encrypted bool) *flow.IP {
	ip := &flow.IP{Encrypted: encrypted}
	if src.IsValid() {
		ip.Source = src.Unmap().String()
	}
	if dst.IsValid() {
		ip.Destination = dst.Unmap().String()
	}
	switch {
	case src.IsValid() && src.Unmap().Is4(), !src.IsValid() && dst.IsValid() && dst.Unmap().Is4():
		ip.IpVersion = flow.IPVersion_IPv4
	case src.IsValid() || dst.IsValid():
		ip.IpVersion = flow.IPVersion_IPv6
	}
	return ip
}

func tcpLayer(info *ConnInfo, flags *flow.TCPFlags) *flow.Layer4 {
	return &flow.Layer4{Protocol: &flow.Layer4_TCP{TCP: &flow.TCP{
		SourcePort:      uint32(info.Source.Addr.Port()),
		DestinationPort: uint32(appAddr(info).Port()),
		Flags:           flags,
	}}}
}

// endpoint describes one end. The mesh state has no pod labels (only the
// app and version labels), so the labels are those two, the pod's namespace
// and ServiceAccount as Cilium names them, and the principal; a peer with
// neither workload nor identity is Cilium's reserved world.
func endpoint(p *Peer) *flow.Endpoint {
	ep := &flow.Endpoint{}
	id := p.Identity.String()
	if w := p.Workload; w != nil {
		ep.Namespace = valid(w.Namespace)
		ep.PodName = valid(w.Name)
		ep.ClusterName = valid(w.Cluster)
		ep.Labels = ciliumLabels(w)
		if w.WorkloadName != "" {
			// The mesh state does not say which kind of controller it is.
			ep.Workloads = []*flow.Workload{{Name: valid(w.WorkloadName)}}
		}
	} else if id != "" {
		// A verified peer the state does not know (yet): its namespace is
		// its identity's.
		ep.Namespace = p.Identity.Namespace
		ep.Labels = []string{"k8s:io.kubernetes.pod.namespace=" + p.Identity.Namespace}
	}
	switch {
	case id != "":
		ep.Identity = flowid.Identity(id)
		ep.Labels = append(ep.Labels, flowid.PrincipalLabel(id))
	case p.Workload == nil:
		ep.Identity = worldIdentity
		ep.Labels = []string{worldLabel}
	}
	slices.Sort(ep.Labels)
	return ep
}

func ciliumLabels(w *state.Workload) []string {
	labels := make([]string, 0, 6)
	if w.App != "" {
		labels = append(labels, "k8s:app="+valid(w.App))
	}
	if w.Version != "" {
		labels = append(labels, "k8s:version="+valid(w.Version))
	}
	if w.Namespace != "" {
		labels = append(labels, "k8s:io.kubernetes.pod.namespace="+valid(w.Namespace))
	}
	if w.ServiceAccount != "" {
		labels = append(labels, "k8s:io.cilium.k8s.policy.serviceaccount="+valid(w.ServiceAccount))
	}
	return labels
}

// structTypeURL is the Any type URL of a google.protobuf.Struct.
const structTypeURL = "type.googleapis.com/google.protobuf.Struct"

// extensions is weft's Struct of per-connection facts, in an Any. extra
// values are strings or float64s. The Struct is encoded by hand, straight
// into the Any's bytes: building a structpb.Struct and marshalling it cost
// more than the rest of the record.
func extensions(info *ConnInfo, event string, extra map[string]any) *anypb.Any {
	b := make([]byte, 0, 256)
	b = appendStringField(b, extEvent, event)
	if id := info.Source.Identity.String(); id != "" {
		b = appendStringField(b, extSourcePrincipal, id)
	}
	if id := info.Destination.Identity.String(); id != "" {
		b = appendStringField(b, extDestinationPrincipal, id)
	}
	for k, v := range extra {
		switch v := v.(type) {
		case string:
			b = appendStringField(b, k, valid(v))
		case float64:
			b = appendNumberField(b, k, v)
		}
	}
	return &anypb.Any{TypeUrl: structTypeURL, Value: b}
}

// Field numbers of google.protobuf.Struct, its map entries and Value.
const (
	structFields     = 1 // Struct.fields, map<string, Value>
	entryKey         = 1
	entryValue       = 2
	valueNumberValue = 2 // Value.number_value, double
	valueStringValue = 3 // Value.string_value, string
)

// appendStringField appends the Struct map entry key: {string_value: v}.
func appendStringField(b []byte, key, v string) []byte {
	value := protowire.SizeTag(valueStringValue) + protowire.SizeBytes(len(v))
	return appendEntry(b, key, value, func(b []byte) []byte {
		b = protowire.AppendTag(b, valueStringValue, protowire.BytesType)
		return protowire.AppendString(b, v)
	})
}

// appendNumberField appends the Struct map entry key: {number_value: v}.
func appendNumberField(b []byte, key string, v float64) []byte {
	value := protowire.SizeTag(valueNumberValue) + protowire.SizeFixed64()
	return appendEntry(b, key, value, func(b []byte) []byte {
		b = protowire.AppendTag(b, valueNumberValue, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v))
	})
}

// appendEntry appends one map entry of Struct.fields whose Value message,
// of size valueSize, appendValue writes.
func appendEntry(b []byte, key string, valueSize int, appendValue func([]byte) []byte) []byte {
	entry := protowire.SizeTag(entryKey) + protowire.SizeBytes(len(key)) +
		protowire.SizeTag(entryValue) + protowire.SizeBytes(valueSize)
	b = protowire.AppendTag(b, structFields, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(entry))
	b = protowire.AppendTag(b, entryKey, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, entryValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(valueSize))
	return appendValue(b)
}

// valid replaces bytes that are not UTF-8: protobuf refuses to marshal such
// a string, and one bad record would cost its whole batch.
func valid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
