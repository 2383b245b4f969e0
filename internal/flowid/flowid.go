// Package flowid holds the conventions that tie a flow record's endpoints to
// weft identities, shared by every flow producer (weft-ztunnel, waypoints)
// and reader (the agent's flow server, weft observe, tests): the principal
// label "weft:principal=<SPIFFE ID>" on flow.Endpoint.labels, and the stable
// 32-bit Endpoint.identity derived from the SPIFFE ID, so Hubble's label and
// identity filters work on weft flows unchanged (api/flows/v1/flows.proto).
//
// The package is pure computation; it must never import a weft component.
package flowid

import (
	"hash/fnv"
	"strings"
)

// IdentityBit is set in every non-zero identity Identity returns, so weft
// identities never collide with Cilium's reserved identities (1–255) nor
// with its cluster-scoped ones below 1<<24.
const IdentityBit = 0x1000000

// LabelSource is the Cilium label source of weft's endpoint labels: a label
// "weft:principal=…" has source "weft" and key "principal".
const LabelSource = "weft"

// PrincipalLabelPrefix starts the label carrying an endpoint's SPIFFE ID.
const PrincipalLabelPrefix = LabelSource + ":principal="

// Identity is the numeric identity of the SPIFFE ID spiffeID: the 32-bit
// FNV-1a hash of its bytes with IdentityBit set; 0 (Hubble's "unknown") for
// "". Equal IDs give equal identities on every node and across restarts.
func Identity(spiffeID string) uint32 {
	if spiffeID == "" {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(spiffeID))
	return h.Sum32() | IdentityBit
}

// PrincipalLabel is the endpoint label carrying spiffeID; "" for "".
func PrincipalLabel(spiffeID string) string {
	if spiffeID == "" {
		return ""
	}
	return PrincipalLabelPrefix + spiffeID
}

// Principal returns the SPIFFE ID in labels (an Endpoint's labels), if one
// of them is a principal label.
func Principal(labels []string) (spiffeID string, ok bool) {
	for _, l := range labels {
		if id, found := strings.CutPrefix(l, PrincipalLabelPrefix); found && id != "" {
			return id, true
		}
	}
	return "", false
}

// WithPrincipal returns labels with the principal label of spiffeID added,
// replacing any principal label already there; labels itself is not
// modified. An empty spiffeID removes the principal label.
func WithPrincipal(labels []string, spiffeID string) []string {
	out := make([]string, 0, len(labels)+1)
	for _, l := range labels {
		if !strings.HasPrefix(l, PrincipalLabelPrefix) {
			out = append(out, l)
		}
	}
	if spiffeID != "" {
		out = append(out, PrincipalLabel(spiffeID))
	}
	return out
}
