// Package flowtest holds the flow records the flow server's tests share.
package flowtest

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/flowid"
)

// WebID is the source identity of L4Flow.
const WebID = "spiffe://cluster.local/ns/shop/sa/web"

// L4Flow is a forwarded TCP flow shop/web-7d9 -> shop/db-0:5432 on node-a.
func L4Flow() *flowpb.Flow {
	return &flowpb.Flow{
		Uuid:      "u-1",
		Verdict:   flowpb.Verdict_FORWARDED,
		NodeName:  "node-a",
		EventType: &flowpb.CiliumEventType{Type: 4},
		IP:        &flowpb.IP{Source: "10.1.0.5", Destination: "10.1.1.7", IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: 40000, DestinationPort: 5432, Flags: &flowpb.TCPFlags{SYN: true},
		}}},
		Source: &flowpb.Endpoint{
			Namespace: "shop", PodName: "web-7d9", Identity: flowid.Identity(WebID),
			Labels:    []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop", flowid.PrincipalLabel(WebID)},
			Workloads: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}},
		},
		Destination: &flowpb.Endpoint{
			Namespace: "shop", PodName: "db-0", Identity: 0x1234567,
			Labels: []string{"k8s:app=db", "k8s:tier=data"},
		},
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		IsReply:          wrapperspb.Bool(false),
		DestinationNames: []string{"db.shop.svc.cluster.local"},
	}
}

// HTTPFlow is an L7 GET /api/items?x=1 -> 503 between default/a and default/b.
func HTTPFlow() *flowpb.Flow {
	return &flowpb.Flow{
		Verdict:   flowpb.Verdict_FORWARDED,
		NodeName:  "node-b",
		EventType: &flowpb.CiliumEventType{Type: 129},
		L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 1, DestinationPort: 8080}}},
		L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
			Code: 503, Method: "GET", Url: "http://b.default:8080/api/items?x=1",
			Headers: []*flowpb.HTTPHeader{{Key: "x-env", Value: "prod"}},
		}}},
		Source:           &flowpb.Endpoint{Namespace: "default", PodName: "a"},
		Destination:      &flowpb.Endpoint{Namespace: "default", PodName: "b"},
		TrafficDirection: flowpb.TrafficDirection_INGRESS,
	}
}

// DroppedFlow is L4Flow denied by policy.
func DroppedFlow() *flowpb.Flow {
	f := L4Flow()
	f.Verdict = flowpb.Verdict_DROPPED
	f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
	f.IsReply = nil
	f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	return f
}
