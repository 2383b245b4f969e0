package observe

import (
	"strconv"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weftmesh/weft/internal/flowid"
)

func TestFlowFilters(t *testing.T) {
	webN := flowid.Identity(webID)
	tests := []struct {
		name string
		in   Filters
		want []string // protojson of each filter
	}{
		{name: "none", in: Filters{}, want: nil},
		{name: "verdict both sides", in: Filters{Verdicts: []string{"dropped", "FORWARDED"}},
			want: []string{`{"verdict":["DROPPED","FORWARDED"]}`}},
		{name: "pod either end", in: Filters{Pods: []string{"shop/web"}},
			want: []string{`{"sourcePod":["shop/web"]}`, `{"destinationPod":["shop/web"]}`}},
		{name: "namespace alone", in: Filters{Namespaces: []string{"shop"}},
			want: []string{`{"sourcePod":["shop/"]}`, `{"destinationPod":["shop/"]}`}},
		{name: "pod completed by namespace", in: Filters{Namespaces: []string{"shop", "blog"}, Pods: []string{"web"}},
			want: []string{`{"sourcePod":["shop/web","blog/web"]}`, `{"destinationPod":["shop/web","blog/web"]}`}},
		{name: "from and to", in: Filters{FromPods: []string{"shop/web"}, ToPods: []string{"shop/api"}},
			want: []string{`{"sourcePod":["shop/web"],"destinationPod":["shop/api"]}`}},
		{name: "from pod within namespace", in: Filters{Namespaces: []string{"shop"}, FromPods: []string{"web"}},
			want: []string{`{"sourcePod":["shop/web"]}`}},
		{name: "identity by namespace/sa", in: Filters{Identities: []string{"shop/web"}},
			want: []string{`{"sourceIdentity":[` + u32(webN) + `]}`, `{"destinationIdentity":[` + u32(webN) + `]}`}},
		{name: "identity by spiffe id and port and protocol", in: Filters{Identities: []string{webID}, Ports: []string{"8080"}, Protocols: []string{"TCP"}},
			want: []string{
				`{"protocol":["tcp"],"sourcePort":["8080"],"sourceIdentity":[` + u32(webN) + `]}`,
				`{"protocol":["tcp"],"destinationPort":["8080"],"destinationIdentity":[` + u32(webN) + `]}`}},
		{name: "http", in: Filters{HTTPStatus: []string{"503", "4+"}, HTTPMethod: []string{"get"}, HTTPPath: []string{"/v1/.*"}},
			want: []string{`{"httpStatusCode":["503","4+"],"httpMethod":["GET"],"httpPath":["/v1/.*"]}`}},
		{name: "types", in: Filters{Types: []string{"l7", "trace:to-endpoint", "1:133"}},
			want: []string{`{"eventType":[{"type":129},{"type":4,"matchSubType":true},{"type":1,"matchSubType":true,"subType":133}]}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.FlowFilters()
			if err != nil {
				t.Fatalf("FlowFilters(%+v): %v", tt.in, err)
			}
			var gotJSON []string
			for _, f := range got {
				gotJSON = append(gotJSON, compactJSON(t, f))
			}
			if strings.Join(gotJSON, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("FlowFilters(%+v) =\n%s\nwant\n%s", tt.in, strings.Join(gotJSON, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func u32(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func compactJSON(t *testing.T, f *flowpb.FlowFilter) string {
	t.Helper()
	b, err := protojson.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	// protojson randomises spaces; drop them (no value here has one).
	return strings.ReplaceAll(string(b), " ", "")
}

func TestFlowFiltersErrors(t *testing.T) {
	tests := []struct {
		name string
		in   Filters
		want string
	}{
		{"bad verdict", Filters{Verdicts: []string{"DENIED"}}, `invalid --verdict "DENIED": want one of FORWARDED, DROPPED`},
		{"bad port", Filters{Ports: []string{"http"}}, `invalid --port "http"`},
		{"bad identity", Filters{Identities: []string{"web"}}, `invalid --identity "web": want a SPIFFE ID`},
		{"bad status", Filters{HTTPStatus: []string{"50"}}, `invalid --http-status "50"`},
		{"bad type", Filters{Types: []string{"bogus"}}, `invalid --type "bogus"`},
		{"pod outside namespace", Filters{Namespaces: []string{"shop"}, Pods: []string{"blog/web"}}, `pod "blog/web" is in none of the namespaces`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.in.FlowFilters()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("FlowFilters(%+v) error = %v, want one containing %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestRequest(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		q       Query
		want    string
		wantErr string
	}{
		{name: "default last 20", q: Query{}, want: `{"number":"20"}`},
		{name: "follow only new", q: Query{Follow: true}, want: `{"follow":true}`},
		{name: "last and follow", q: Query{Follow: true, Last: 50}, want: `{"number":"50","follow":true}`},
		{name: "since duration", q: Query{Since: "5m"}, want: `{"since":"2026-12-01T11:55:00Z"}`},
		{name: "since and until", q: Query{Since: "2026-12-01T10:00:00Z", Until: "1h"}, want: `{"since":"2026-12-01T10:00:00Z","until":"2026-12-01T11:00:00Z"}`},
		{name: "until before since", q: Query{Since: "1h", Until: "2h"}, wantErr: "is before --since"},
		{name: "until with follow", q: Query{Follow: true, Until: "1h"}, wantErr: "--until cannot be combined with --follow"},
		{name: "bad since", q: Query{Since: "yesterday"}, wantErr: `invalid --since: "yesterday" is neither a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := tt.q.Request(now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Request(%+v) error = %v, want %q", tt.q, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := protojson.Marshal(req)
			if got := strings.ReplaceAll(string(b), " ", ""); got != tt.want {
				t.Errorf("Request(%+v) = %s, want %s", tt.q, got, tt.want)
			}
		})
	}
}
