package preflight

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeAPIServer serves the two lists the check reads, and records the
// namespace label selector it was asked for.
func fakeAPIServer(t *testing.T, policies map[string][]networkingv1.NetworkPolicy) (url string, selector *string) {
	t.Helper()
	var sel string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces", func(w http.ResponseWriter, r *http.Request) {
		sel = r.URL.Query().Get("labelSelector")
		list := corev1.NamespaceList{TypeMeta: metav1.TypeMeta{Kind: "NamespaceList", APIVersion: "v1"}}
		for ns := range policies {
			list.Items = append(list.Items, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
		writeJSON(t, w, list)
	})
	mux.HandleFunc("GET /apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies", func(w http.ResponseWriter, r *http.Request) {
		list := networkingv1.NetworkPolicyList{
			TypeMeta: metav1.TypeMeta{Kind: "NetworkPolicyList", APIVersion: "networking.k8s.io/v1"},
			Items:    policies[r.PathValue("ns")],
		}
		writeJSON(t, w, list)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, &sel
}

func writeJSON(t *testing.T, w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		t.Errorf("encode %T: %v", v, err)
	}
}

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + server + `"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNetworkPoliciesThroughKubeconfig: the real client path (kubeconfig,
// typed clients, label selector) against a fake API server.
func TestNetworkPoliciesThroughKubeconfig(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // never in-cluster here
	url, selector := fakeAPIServer(t, map[string][]networkingv1.NetworkPolicy{
		"shop": {ingressPolicy("web", tcp(80)), ingressPolicy("hbone-ok", tcp(80), tcp(hbonePort))},
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + closed.Addr().String()
	closed.Close()

	tests := []struct {
		name       string
		opts       Options
		want       Status
		wantDetail string
	}{
		{
			name: "policies listed", opts: Options{Kubeconfig: writeKubeconfig(t, url)},
			want:       StatusWarn,
			wantDetail: "1 enrolled namespace, 2 NetworkPolicies; 1 would block TCP 15008 (HBONE): shop/web (ingress)",
		},
		{name: "no kubeconfig", want: StatusSkip, wantDetail: "no cluster access"},
		{name: "unreachable", opts: Options{Kubeconfig: writeKubeconfig(t, refused)}, want: StatusWarn},
		{name: "unreadable kubeconfig", opts: Options{Kubeconfig: filepath.Join(t.TempDir(), "missing")}, want: StatusWarn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.APITimeout = 5 * time.Second
			got := checkNetworkPoliciesHost(t.Context(), tt.opts)
			if got.Status != tt.want || tt.wantDetail != "" && got.Detail != tt.wantDetail {
				t.Errorf("checkNetworkPoliciesHost(%+v) = %+v; want status %s, detail %q", tt.opts, got, tt.want, tt.wantDetail)
			}
			t.Logf("%+v", got)
		})
	}
	if *selector != "weft.io/mesh=enabled" {
		t.Errorf("namespaces listed with labelSelector %q, want weft.io/mesh=enabled", *selector)
	}
}
