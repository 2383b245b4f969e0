package compile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/api/smi"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
)

func TestPolicies(t *testing.T) {
	const (
		tcp  = accessv1alpha3.KindTCPRoute
		http = accessv1alpha3.KindHTTPRouteGroup
		udp  = accessv1alpha3.KindUDPRoute
	)
	front := []accessv1alpha3.IdentityBindingSubject{sa("front")}
	frontID := "spiffe://cluster.local/ns/shop/sa/front"
	routes := []*specsv1alpha4.TCPRoute{
		tcpRoute("shop", "db", "db-ports", 5432, 5433, 5432),
		tcpRoute("shop", "any", ""),
		tcpRoute("other", "only-elsewhere", "", 80),
	}
	groups := []*specsv1alpha4.HTTPRouteGroup{
		routeGroup("shop", "api",
			specsv1alpha4.HTTPMatch{Name: "items", PathRegex: "/items.*", Methods: []specsv1alpha4.HTTPRouteMethod{"GET"}},
			specsv1alpha4.HTTPMatch{Name: "cart", PathRegex: "/cart"}),
		routeGroup("shop", "broken", specsv1alpha4.HTTPMatch{Name: "bad", PathRegex: "/items("}),
		routeGroup("shop", "broken-header", specsv1alpha4.HTTPMatch{Name: "bad", Headers: map[string]string{"x-ok": ".*", "x-bad": "[z-a]"}}),
	}
	// policy is the body of TrafficTarget shop/tt selecting shop/sa/db.
	policy := func(sources []string, rules ...*meshv1.Rule) *meshv1.Policy {
		return &meshv1.Policy{Name: "shop/tt", Destination: &meshv1.Destination{Namespace: "shop", ServiceAccount: "db"}, Sources: sources, Rules: rules}
	}
	invalid := func(msg string) *meshv1.Policy {
		return &meshv1.Policy{Name: "shop/tt", Destination: &meshv1.Destination{Namespace: "shop", ServiceAccount: "db"}, Invalid: msg}
	}

	tests := []struct {
		name   string
		td     string
		target *accessv1alpha3.TrafficTarget
		// want is the Policy body; nil: no Policy resource.
		want *meshv1.Policy
		// wantInvalid, when set, is a substring of want.Invalid (compared
		// instead of want.Invalid itself).
		wantInvalid string
		wantStatus  metav1.ConditionStatus
		wantReason  string
		// wantMessage are substrings of the condition's message.
		wantMessage []string
	}{
		{
			name:        "TCPRoute allows its ports, sorted and unique",
			target:      target("shop", "tt", sa("db"), front, rule(tcp, "db")),
			want:        policy([]string{frontID}, &meshv1.Rule{Kind: "TCPRoute", Name: "db", Ports: []uint32{5432, 5433}}),
			wantStatus:  metav1.ConditionTrue,
			wantReason:  smi.ReasonAccepted,
			wantMessage: []string{"1 source may reach ServiceAccount shop/db by 1 rule"},
		},
		{
			name:       "TCPRoute without ports allows every port",
			target:     target("shop", "tt", sa("db"), front, rule(tcp, "any")),
			want:       policy([]string{frontID}, &meshv1.Rule{Kind: "TCPRoute", Name: "any"}),
			wantStatus: metav1.ConditionTrue,
			wantReason: smi.ReasonAccepted,
		},
		{
			name:       "TCPRoute rule naming its match",
			target:     target("shop", "tt", sa("db"), front, rule(tcp, "db", "db-ports")),
			want:       policy([]string{frontID}, &meshv1.Rule{Kind: "TCPRoute", Name: "db", Ports: []uint32{5432, 5433}}),
			wantStatus: metav1.ConditionTrue,
			wantReason: smi.ReasonAccepted,
		},
		{
			name:        "TCPRoute rule naming a match the route lacks",
			target:      target("shop", "tt", sa("db"), front, rule(tcp, "db", "nope")),
			want:        invalid(""),
			wantInvalid: `TCPRoute "db" has no match named "nope"`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonMatchNotFound,
			wantMessage: []string{`spec.rules[0]: TCPRoute "db" has no match named "nope"`, "allows nothing until this is fixed"},
		},
		{
			name: "sources in several namespaces, deduplicated and sorted, ORed",
			target: target("shop", "tt", sa("db"),
				[]accessv1alpha3.IdentityBindingSubject{sa("front"), saIn("ops", "backup"), saIn("shop", "front")},
				rule(tcp, "any")),
			want:       policy([]string{"spiffe://cluster.local/ns/ops/sa/backup", frontID}, &meshv1.Rule{Kind: "TCPRoute", Name: "any"}),
			wantStatus: metav1.ConditionTrue,
			wantReason: smi.ReasonAccepted,
		},
		{
			name:       "sources in the mesh's trust domain",
			td:         "corp.example",
			target:     target("shop", "tt", sa("db"), front, rule(tcp, "any")),
			want:       policy([]string{"spiffe://corp.example/ns/shop/sa/front"}, &meshv1.Rule{Kind: "TCPRoute", Name: "any"}),
			wantStatus: metav1.ConditionTrue,
			wantReason: smi.ReasonAccepted,
		},
		{
			name:   "HTTPRouteGroup rule is HTTP and needs a waypoint",
			target: target("shop", "tt", sa("db"), front, rule(http, "api")),
			want:   policy([]string{frontID}, &meshv1.Rule{Kind: "HTTPRouteGroup", Name: "api", Http: true}),
			// Not enforced as written: it denies at L4.
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonWaypointRequired,
			wantMessage: []string{"spec.rules[0] (HTTPRouteGroup api) matches HTTP requests", "namespace shop has no waypoint", "it denies until one runs"},
		},
		{
			name:        "HTTPRouteGroup rule narrowed to existing matches",
			target:      target("shop", "tt", sa("db"), front, rule(http, "api", "items", "cart")),
			want:        policy([]string{frontID}, &meshv1.Rule{Kind: "HTTPRouteGroup", Name: "api", Http: true}),
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonWaypointRequired,
			wantMessage: []string{"HTTPRouteGroup api"},
		},
		{
			name:   "TCP and HTTP rules: the TCP ones are enforced",
			target: target("shop", "tt", sa("db"), front, rule(tcp, "db"), rule(http, "api")),
			want: policy([]string{frontID},
				&meshv1.Rule{Kind: "TCPRoute", Name: "db", Ports: []uint32{5432, 5433}},
				&meshv1.Rule{Kind: "HTTPRouteGroup", Name: "api", Http: true}),
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonWaypointRequired,
			wantMessage: []string{"spec.rules[1] (HTTPRouteGroup api)", "the TCPRoute rules are enforced"},
		},
		{
			name:        "HTTPRouteGroup rule naming a match the group lacks",
			target:      target("shop", "tt", sa("db"), front, rule(http, "api", "items", "admin")),
			want:        invalid(""),
			wantInvalid: `HTTPRouteGroup "api" has no match named "admin"`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonMatchNotFound,
			wantMessage: []string{`has no match named "admin" (it has "items", "cart")`},
		},
		{
			name:        "missing HTTPRouteGroup",
			target:      target("shop", "tt", sa("db"), front, rule(tcp, "db"), rule(http, "nope")),
			want:        invalid(""),
			wantInvalid: `spec.rules[1]: HTTPRouteGroup "nope" does not exist in namespace shop`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonRouteGroupNotFound,
			wantMessage: []string{`HTTPRouteGroup "nope" does not exist in namespace shop`, "allows nothing"},
		},
		{
			name:        "missing TCPRoute",
			target:      target("shop", "tt", sa("db"), front, rule(tcp, "nope")),
			want:        invalid(""),
			wantInvalid: `TCPRoute "nope" does not exist in namespace shop`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonRouteNotFound,
		},
		{
			name:        "routes are looked up in the TrafficTarget's namespace only",
			target:      target("shop", "tt", sa("db"), front, rule(tcp, "only-elsewhere")),
			want:        invalid(""),
			wantInvalid: `TCPRoute "only-elsewhere" does not exist in namespace shop`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonRouteNotFound,
		},
		{
			name:        "UDPRoute is not supported",
			target:      target("shop", "tt", sa("db"), front, rule(tcp, "db"), rule(udp, "dns")),
			want:        invalid(""),
			wantInvalid: `spec.rules[1] has kind "UDPRoute"; weft supports TCPRoute and HTTPRouteGroup`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonUnsupportedKind,
		},
		{
			name: "source of another kind is not supported",
			target: target("shop", "tt", sa("db"),
				[]accessv1alpha3.IdentityBindingSubject{sa("front"), {Kind: "Group", Name: "admins"}}, rule(tcp, "db")),
			want:        invalid(""),
			wantInvalid: `spec.sources[1] has kind "Group"; weft supports only ServiceAccount`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonUnsupportedKind,
		},
		{
			name:        "source that cannot be a ServiceAccount",
			target:      target("shop", "tt", sa("db"), []accessv1alpha3.IdentityBindingSubject{sa("Front")}, rule(tcp, "db")),
			want:        invalid(""),
			wantInvalid: "spec.sources[0] (shop/Front) is not a ServiceAccount name",
			wantStatus:  metav1.ConditionFalse,
			wantReason:  reasonInvalidSubject,
		},
		{
			name:        "invalid path regex",
			target:      target("shop", "tt", sa("db"), front, rule(http, "broken")),
			want:        invalid(""),
			wantInvalid: `HTTPRouteGroup "broken": match "bad": pathRegex "/items(" is not a valid RE2 regular expression`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonInvalidMatch,
		},
		{
			name:        "invalid header regex",
			target:      target("shop", "tt", sa("db"), front, rule(http, "broken-header")),
			want:        invalid(""),
			wantInvalid: `match "bad": header "x-bad": "[z-a]" is not a valid RE2 regular expression`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonInvalidMatch,
		},
		{
			name:        "destination in another namespace grants and denies nothing",
			target:      target("shop", "tt", saIn("bank", "vault"), front, rule(tcp, "db")),
			want:        nil,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonCrossNamespaceDestination,
			wantMessage: []string{"ServiceAccount bank/vault, in namespace bank, not shop", "only a TrafficTarget in bank can open access to it"},
		},
		{
			name:       "destination namespace written out",
			target:     target("shop", "tt", saIn("shop", "db"), front, rule(tcp, "any")),
			want:       policy([]string{frontID}, &meshv1.Rule{Kind: "TCPRoute", Name: "any"}),
			wantStatus: metav1.ConditionTrue,
			wantReason: smi.ReasonAccepted,
		},
		{
			name:        "destination without a name selects nothing",
			target:      target("shop", "tt", sa(""), front, rule(tcp, "db")),
			want:        nil,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  reasonInvalidSubject,
			wantMessage: []string{"spec.destination.name is empty"},
		},
		{
			name: "destination port narrows every rule",
			target: func() *accessv1alpha3.TrafficTarget {
				d := sa("db")
				d.Port = ptr(int32(5433))
				return target("shop", "tt", d, front, rule(tcp, "db"), rule(tcp, "any"), rule(http, "api"))
			}(),
			want: policy([]string{frontID},
				&meshv1.Rule{Kind: "TCPRoute", Name: "db", Ports: []uint32{5433}},
				&meshv1.Rule{Kind: "TCPRoute", Name: "any", Ports: []uint32{5433}},
				&meshv1.Rule{Kind: "HTTPRouteGroup", Name: "api", Ports: []uint32{5433}, Http: true}),
			wantStatus: metav1.ConditionFalse,
			wantReason: smi.ReasonWaypointRequired,
		},
		{
			name: "a rule whose ports exclude the destination port allows nothing",
			target: func() *accessv1alpha3.TrafficTarget {
				d := sa("db")
				d.Port = ptr(int32(80))
				return target("shop", "tt", d, front, rule(tcp, "db"))
			}(),
			want:       policy([]string{frontID}),
			wantStatus: metav1.ConditionTrue,
			wantReason: smi.ReasonAccepted,
		},
		{
			name: "destination of another kind is not supported",
			target: target("shop", "tt", accessv1alpha3.IdentityBindingSubject{Kind: "Pod", Name: "db"}, front,
				rule(tcp, "db")),
			want:        invalid(""),
			wantInvalid: `spec.destination has kind "Pod"`,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  smi.ReasonUnsupportedKind,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Compile(Inputs{
				TrustDomain:     tt.td,
				TrafficTargets:  []*accessv1alpha3.TrafficTarget{tt.target},
				TCPRoutes:       routes,
				HTTPRouteGroups: groups,
			})
			checkNodeAccepts(t, out)
			r := resource(out, meshv1.PolicyName("shop", "tt"))
			got := r.GetPolicy()
			switch {
			case tt.want == nil && r != nil:
				t.Errorf("policy = %s, want none", text(got))
			case tt.want != nil && r == nil:
				t.Errorf("policy missing; resources %q", names(out))
			case tt.want != nil:
				if tt.wantInvalid != "" {
					if !strings.Contains(got.GetInvalid(), tt.wantInvalid) {
						t.Errorf("policy invalid = %q, want it to contain %q", got.GetInvalid(), tt.wantInvalid)
					}
					want := proto.Clone(tt.want).(*meshv1.Policy)
					want.Invalid = got.GetInvalid()
					checkEqual(t, "policy", got, want)
				} else {
					checkEqual(t, "policy", got, tt.want)
				}
			}
			if tt.want != nil && (tt.wantStatus == metav1.ConditionTrue) != (got.GetInvalid() == "" && !hasHTTP(got)) {
				t.Errorf("Accepted=%s for policy %s: an accepted TrafficTarget must compile to a valid L4 policy and only then", tt.wantStatus, text(got))
			}

			cond, ok := out.Accepted[types.NamespacedName{Namespace: "shop", Name: "tt"}]
			if !ok {
				t.Fatalf("no Accepted condition for shop/tt; have %v", out.Accepted)
			}
			if cond.Type != smi.ConditionAccepted || cond.Status != tt.wantStatus || cond.Reason != tt.wantReason || cond.ObservedGeneration != 3 {
				t.Errorf("condition = {%s %s %s gen %d}, want {%s %s %s gen 3}", cond.Type, cond.Status, cond.Reason, cond.ObservedGeneration,
					smi.ConditionAccepted, tt.wantStatus, tt.wantReason)
			}
			if !cond.LastTransitionTime.IsZero() {
				t.Errorf("condition has a timestamp %v; the controller sets it", cond.LastTransitionTime)
			}
			for _, m := range tt.wantMessage {
				if !strings.Contains(cond.Message, m) {
					t.Errorf("condition message = %q, want it to contain %q", cond.Message, m)
				}
			}
		})
	}
}

func hasHTTP(p *meshv1.Policy) bool {
	for _, r := range p.GetRules() {
		if r.Http {
			return true
		}
	}
	return false
}

// TestPoliciesAreIndependent: TrafficTargets are additive; one that is
// invalid takes nothing from another, and a TrafficTarget being deleted
// compiles to nothing.
func TestPoliciesAreIndependent(t *testing.T) {
	now := metav1.Now()
	gone := target("shop", "gone", sa("db"), []accessv1alpha3.IdentityBindingSubject{sa("x")}, rule(accessv1alpha3.KindTCPRoute, "any"))
	gone.DeletionTimestamp = &now
	out := Compile(Inputs{
		TrafficTargets: []*accessv1alpha3.TrafficTarget{
			target("shop", "ok", sa("db"), []accessv1alpha3.IdentityBindingSubject{sa("front")}, rule(accessv1alpha3.KindTCPRoute, "any")),
			target("shop", "bad", sa("db"), []accessv1alpha3.IdentityBindingSubject{sa("front")}, rule(accessv1alpha3.KindTCPRoute, "missing")),
			gone,
		},
		TCPRoutes: []*specsv1alpha4.TCPRoute{tcpRoute("shop", "any", "")},
	})
	checkNodeAccepts(t, out)
	ok := resource(out, meshv1.PolicyName("shop", "ok")).GetPolicy()
	if ok == nil || ok.Invalid != "" || len(ok.Rules) != 1 {
		t.Errorf("policy shop/ok = %s, want a valid one rule policy", text(ok))
	}
	if bad := resource(out, meshv1.PolicyName("shop", "bad")).GetPolicy(); bad == nil || bad.Invalid == "" {
		t.Errorf("policy shop/bad = %s, want an invalid policy", text(bad))
	}
	if r := resource(out, meshv1.PolicyName("shop", "gone")); r != nil {
		t.Errorf("policy shop/gone = %s, want none (being deleted)", text(r))
	}
	if c, has := out.Accepted[types.NamespacedName{Namespace: "shop", Name: "gone"}]; has {
		t.Errorf("condition of shop/gone = %+v, want none", c)
	}
	if n := len(out.Accepted); n != 2 {
		t.Errorf("len(Accepted) = %d, want 2: %v", n, out.Accepted)
	}
}

func TestSettings(t *testing.T) {
	tests := []struct {
		name string
		in   Inputs
		want *meshv1.MeshSettings
	}{
		{
			name: "defaults",
			want: &meshv1.MeshSettings{TrustDomain: "cluster.local", PolicyMode: ModePermissive},
		},
		{
			name: "strict with a bundle",
			in:   Inputs{TrustDomain: "corp.example", PolicyMode: ModeStrict, TrustBundlePEM: []byte("-----BEGIN CERTIFICATE-----\n")},
			want: &meshv1.MeshSettings{TrustDomain: "corp.example", PolicyMode: ModeStrict, TrustBundlePem: "-----BEGIN CERTIFICATE-----\n"},
		},
		{
			name: "unknown mode fails closed",
			in:   Inputs{PolicyMode: "Permissive"},
			want: &meshv1.MeshSettings{TrustDomain: "cluster.local", PolicyMode: ModeStrict},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Compile(tt.in)
			checkEqual(t, "settings", resource(out, meshv1.SettingsName).GetSettings(), tt.want)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		in      Inputs
		wantErr string
	}{
		{name: "defaults"},
		{name: "strict", in: Inputs{PolicyMode: ModeStrict, TrustDomain: "corp.example"}},
		{name: "bundle of two roots", in: Inputs{TrustBundlePEM: append(selfSigned(t), selfSigned(t)...)}},
		{name: "unknown mode", in: Inputs{PolicyMode: "enforcing"}, wantErr: `policy mode "enforcing"`},
		{name: "bad trust domain", in: Inputs{TrustDomain: "Corp:443"}, wantErr: `trust domain "Corp:443"`},
		{name: "bundle not PEM", in: Inputs{TrustBundlePEM: []byte("hello")}, wantErr: "block 0 is not PEM"},
		{name: "bundle with a key", in: Inputs{TrustBundlePEM: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}, wantErr: `"PRIVATE KEY", want CERTIFICATE`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// selfSigned returns a PEM root certificate.
func selfSigned(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: epoch, NotAfter: epoch.Add(time.Hour), KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
