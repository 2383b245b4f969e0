package testapp

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

func TestParseCheck(t *testing.T) {
	pods := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	nodes := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	tests := []struct {
		in      string
		want    Check
		wantErr bool
	}{
		{in: "list:pods:default", want: Check{Verb: "list", Resource: "pods", Namespace: "default", gvr: pods}},
		{in: "list:pods", want: Check{Verb: "list", Resource: "pods", gvr: pods}},
		{in: "LIST:po:default", want: Check{Verb: "list", Resource: "pods", Namespace: "default", gvr: pods}},
		{in: "get:pods:default:web-0", want: Check{Verb: "get", Resource: "pods", Namespace: "default", Name: "web-0", gvr: pods}},
		{in: "watch:secrets:kube-system", want: Check{Verb: "watch", Resource: "secrets", Namespace: "kube-system", gvr: schema.GroupVersionResource{Version: "v1", Resource: "secrets"}}},
		{in: "list:nodes", want: Check{Verb: "list", Resource: "nodes", gvr: nodes}},
		{in: "get:nodes:node-a", want: Check{Verb: "get", Resource: "nodes", Name: "node-a", gvr: nodes}},
		{in: "get:nodes::node-a", want: Check{Verb: "get", Resource: "nodes", Name: "node-a", gvr: nodes}},
		{in: "get:ns:kube-system", want: Check{Verb: "get", Resource: "namespaces", Name: "kube-system", gvr: schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}}},
		{in: "list:deployments:default", want: Check{Verb: "list", Resource: "deployments", Namespace: "default", gvr: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}}},
		{in: "list:meshpolicies.v1alpha1.weft.dev:default", want: Check{Verb: "list", Resource: "meshpolicies.v1alpha1.weft.dev", Namespace: "default", gvr: schema.GroupVersionResource{Group: "weft.dev", Version: "v1alpha1", Resource: "meshpolicies"}}},
		{in: "list", wantErr: true},
		{in: "list:pods:default:name:extra", wantErr: true},
		{in: "delete:pods:default:web-0", wantErr: true},
		{in: "list:widgets:default", wantErr: true},
		{in: "list:widgets.v1:default", wantErr: true},
		{in: "get:pods:default", wantErr: true},
		{in: "get:nodes", wantErr: true},
		{in: "list:pods:default:web-0", wantErr: true},
		{in: "list:nodes:default", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCheck(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseCheck(%q) error = %v, want error %t", tt.in, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("ParseCheck(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

// fakeAPIServer answers like a kube-apiserver for a ServiceAccount that may
// list and watch pods in default, is forbidden secrets in kube-system, and
// finds no node named missing.
func fakeAPIServer(tb testing.TB) *httptest.Server {
	tb.Helper()
	status := func(w http.ResponseWriter, code int, reason, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":%q,"reason":%q,"code":%d}`, msg, reason, code)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/default/pods", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") == "true" {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[`+
			`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"default"}},`+
			`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"b","namespace":"default"}}]}`)
	})
	mux.HandleFunc("GET /api/v1/namespaces/kube-system/secrets", func(w http.ResponseWriter, _ *http.Request) {
		status(w, http.StatusForbidden, "Forbidden", `secrets is forbidden: User "system:serviceaccount:default:client" cannot list resource "secrets" in API group "" in the namespace "kube-system"`)
	})
	mux.HandleFunc("GET /api/v1/nodes/missing", func(w http.ResponseWriter, _ *http.Request) {
		status(w, http.StatusNotFound, "NotFound", `nodes "missing" not found`)
	})
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/selfsubjectreviews", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer pod-token" {
			status(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1","metadata":{},"status":{"userInfo":{`+
			`"username":"system:serviceaccount:default:client","uid":"uid-1","groups":["system:serviceaccounts","system:authenticated"],`+
			`"extra":{"authentication.kubernetes.io/pod-name":["client-0"],"authentication.kubernetes.io/node-name":["node-a"]}}}}`)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		status(w, http.StatusNotFound, "NotFound", "no route for "+r.Method+" "+r.URL.String())
	})
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv
}

func mustParseChecks(tb testing.TB, specs ...string) []Check {
	tb.Helper()
	var checks []Check
	for _, s := range specs {
		c, err := ParseCheck(s)
		if err != nil {
			tb.Fatalf("ParseCheck(%q) = %v", s, err)
		}
		checks = append(checks, c)
	}
	return checks
}

func TestKubeCheck(t *testing.T) {
	api := fakeAPIServer(t)
	two := 2
	cfg := KubeCheckConfig{
		Checks:      mustParseChecks(t, "list:pods:default", "watch:pods:default", "list:secrets:kube-system", "get:nodes:missing"),
		TokenReview: true,
		RESTConfig:  &rest.Config{Host: api.URL, BearerToken: "pod-token"},
	}
	got, err := KubeCheck(t.Context(), cfg)
	if err != nil {
		t.Fatalf("KubeCheck() = %v", err)
	}
	wantChecks := []CheckResult{
		{Verb: "list", Resource: "pods", Namespace: "default", Allowed: true, Code: 200, Items: &two},
		{Verb: "watch", Resource: "pods", Namespace: "default", Allowed: true, Code: 200},
		{Verb: "list", Resource: "secrets", Namespace: "kube-system", Allowed: false, Code: 403},
		{Verb: "get", Resource: "nodes", Name: "missing", Allowed: true, Code: 404},
	}
	if len(got.Checks) != len(wantChecks) {
		t.Fatalf("KubeCheck() returned %d checks, want %d", len(got.Checks), len(wantChecks))
	}
	for i, want := range wantChecks {
		g := got.Checks[i]
		if (g.Error != "") != (want.Code >= 400) {
			t.Errorf("check %d error = %q, want one only for code >= 400", i, g.Error)
		}
		g.Error = ""
		if !reflect.DeepEqual(g, want) {
			t.Errorf("check %d = %+v, want %+v", i, g, want)
		}
	}
	wantReview := &SelfSubjectReviewResult{
		Username: "system:serviceaccount:default:client",
		UID:      "uid-1",
		Groups:   []string{"system:serviceaccounts", "system:authenticated"},
		Extra: map[string][]string{
			"authentication.kubernetes.io/pod-name":  {"client-0"},
			"authentication.kubernetes.io/node-name": {"node-a"},
		},
		Code: 201,
	}
	if !reflect.DeepEqual(got.Review, wantReview) {
		t.Errorf("KubeCheck() review = %+v, want %+v", got.Review, wantReview)
	}
}

func TestKubeCheckUnauthenticatedReview(t *testing.T) {
	api := fakeAPIServer(t)
	got, err := KubeCheck(t.Context(), KubeCheckConfig{
		TokenReview: true,
		RESTConfig:  &rest.Config{Host: api.URL, BearerToken: "wrong"},
	})
	if err != nil {
		t.Fatalf("KubeCheck() = %v, want nil: a 401 is an answer", err)
	}
	if got.Review == nil || got.Review.Code != http.StatusUnauthorized || got.Review.Error == "" {
		t.Errorf("KubeCheck() review = %+v, want code 401 with an error", got.Review)
	}
}

func TestKubeCheckUnreachable(t *testing.T) {
	api := httptest.NewServer(http.NotFoundHandler())
	api.Close()
	got, err := KubeCheck(t.Context(), KubeCheckConfig{
		Checks:     mustParseChecks(t, "list:pods:default"),
		RESTConfig: &rest.Config{Host: api.URL},
		Timeout:    5 * time.Second,
	})
	if !errors.Is(err, ErrAPIUnreachable) {
		t.Fatalf("KubeCheck(closed server) error = %v, want %v", err, ErrAPIUnreachable)
	}
	if len(got.Checks) != 1 || got.Checks[0].Code != 0 || got.Checks[0].Allowed || got.Checks[0].Error == "" {
		t.Errorf("KubeCheck(closed server) checks = %+v, want one with code 0 and an error", got.Checks)
	}
}

func TestKubeCheckNoInClusterConfig(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	_, err := KubeCheck(t.Context(), KubeCheckConfig{TokenReview: true})
	if err == nil || errors.Is(err, ErrAPIUnreachable) {
		t.Errorf("KubeCheck(outside a pod) error = %v, want a configuration error", err)
	}
}
