package testapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// ErrAPIUnreachable is returned by KubeCheck when some operation got no HTTP
// answer from the API server. An answer with any status, 403 included, is
// not an error.
var ErrAPIUnreachable = errors.New("kubernetes api unreachable")

// Check is one API operation for KubeCheck, parsed by ParseCheck.
type Check struct {
	Verb      string // get, list or watch
	Resource  string // canonical plural name, such as "pods"
	Namespace string // empty for cluster-scoped resources or all namespaces
	Name      string // the object to get; empty for list and watch

	gvr schema.GroupVersionResource
}

type resourceInfo struct {
	gvr        schema.GroupVersionResource
	namespaced bool
}

func core(resource string, namespaced bool) resourceInfo {
	return resourceInfo{schema.GroupVersionResource{Version: "v1", Resource: resource}, namespaced}
}

func grouped(group, version, resource string, namespaced bool) resourceInfo {
	return resourceInfo{schema.GroupVersionResource{Group: group, Version: version, Resource: resource}, namespaced}
}

// knownResources maps the resource names ParseCheck accepts without a
// version and group.
var knownResources = map[string]resourceInfo{
	"pods":                core("pods", true),
	"services":            core("services", true),
	"secrets":             core("secrets", true),
	"configmaps":          core("configmaps", true),
	"serviceaccounts":     core("serviceaccounts", true),
	"endpoints":           core("endpoints", true),
	"events":              core("events", true),
	"nodes":               core("nodes", false),
	"namespaces":          core("namespaces", false),
	"endpointslices":      grouped("discovery.k8s.io", "v1", "endpointslices", true),
	"deployments":         grouped("apps", "v1", "deployments", true),
	"daemonsets":          grouped("apps", "v1", "daemonsets", true),
	"leases":              grouped("coordination.k8s.io", "v1", "leases", true),
	"networkpolicies":     grouped("networking.k8s.io", "v1", "networkpolicies", true),
	"roles":               grouped("rbac.authorization.k8s.io", "v1", "roles", true),
	"rolebindings":        grouped("rbac.authorization.k8s.io", "v1", "rolebindings", true),
	"clusterroles":        grouped("rbac.authorization.k8s.io", "v1", "clusterroles", false),
	"clusterrolebindings": grouped("rbac.authorization.k8s.io", "v1", "clusterrolebindings", false),
}

var resourceAliases = map[string]string{
	"pod": "pods", "po": "pods",
	"service": "services", "svc": "services",
	"secret":    "secrets",
	"configmap": "configmaps", "cm": "configmaps",
	"serviceaccount": "serviceaccounts", "sa": "serviceaccounts",
	"ep":   "endpoints",
	"node": "nodes", "no": "nodes",
	"namespace": "namespaces", "ns": "namespaces",
}

// ParseCheck parses VERB:RESOURCE[:NAMESPACE[:NAME]].
//
// VERB is get, list or watch; get needs a NAME, the others take none.
// RESOURCE is one of the built-in names (pods, services, secrets,
// configmaps, nodes, namespaces and a few more, with kubectl's short names)
// or RESOURCE.VERSION.GROUP, such as meshpolicies.v1alpha1.weft.dev. An
// empty NAMESPACE means all namespaces for a namespaced resource. For the
// built-in cluster-scoped resources the third field of a get is the name:
// get:nodes:node-a and get:nodes::node-a are the same check.
func ParseCheck(s string) (Check, error) {
	f := strings.Split(s, ":")
	if len(f) < 2 || len(f) > 4 {
		return Check{}, fmt.Errorf("parse check %q: want VERB:RESOURCE[:NAMESPACE[:NAME]]", s)
	}
	c := Check{Verb: strings.ToLower(f[0])}
	switch c.Verb {
	case "get", "list", "watch":
	default:
		return Check{}, fmt.Errorf("parse check %q: unknown verb %q, want get, list or watch", s, f[0])
	}
	info, name, err := resolveResource(f[1])
	if err != nil {
		return Check{}, fmt.Errorf("parse check %q: %w", s, err)
	}
	c.gvr, c.Resource = info.gvr, name
	if len(f) > 2 {
		c.Namespace = f[2]
	}
	if len(f) > 3 {
		c.Name = f[3]
	}
	if !info.namespaced && len(f) == 3 && c.Verb == "get" {
		c.Namespace, c.Name = "", f[2]
	}
	switch {
	case !info.namespaced && c.Namespace != "":
		return Check{}, fmt.Errorf("parse check %q: %s is cluster-scoped and takes no namespace", s, c.Resource)
	case c.Verb == "get" && c.Name == "":
		return Check{}, fmt.Errorf("parse check %q: get needs a name", s)
	case c.Verb != "get" && c.Name != "":
		return Check{}, fmt.Errorf("parse check %q: %s takes no name", s, c.Verb)
	}
	return c, nil
}

// resolveResource returns what name refers to and its canonical spelling:
// the plural for built-in names, name itself for RESOURCE.VERSION.GROUP.
func resolveResource(name string) (resourceInfo, string, error) {
	lower := strings.ToLower(name)
	if alias, ok := resourceAliases[lower]; ok {
		lower = alias
	}
	if info, ok := knownResources[lower]; ok {
		return info, lower, nil
	}
	resource, rest, _ := strings.Cut(lower, ".")
	version, group, _ := strings.Cut(rest, ".")
	if resource == "" || version == "" || group == "" {
		return resourceInfo{}, "", fmt.Errorf("unknown resource %q, want a built-in name or RESOURCE.VERSION.GROUP", name)
	}
	// Scope is unknown without discovery; the namespace field decides.
	return grouped(group, version, resource, true), lower, nil
}

// CheckResult is the outcome of one Check.
type CheckResult struct {
	Verb      string `json:"verb"`
	Resource  string `json:"resource"`
	Namespace string `json:"namespace"`
	Name      string `json:"name,omitempty"`
	// Allowed reports whether the API server answered with something other
	// than 401 or 403: a 404 for a get is allowed.
	Allowed bool `json:"allowed"`
	// Code is the HTTP status of the answer, 0 if there was none.
	Code  int    `json:"code"`
	Error string `json:"error,omitempty"`
	// Items is the number of objects a successful list returned.
	Items *int `json:"items,omitempty"`
}

// SelfSubjectReviewResult is the user the API server authenticated the
// pod's token as. Extra carries, for a ServiceAccount token bound to a pod,
// authentication.kubernetes.io/pod-name, pod-uid, node-name and
// credential-id.
type SelfSubjectReviewResult struct {
	Username string              `json:"username"`
	UID      string              `json:"uid"`
	Groups   []string            `json:"groups"`
	Extra    map[string][]string `json:"extra"`
	Code     int                 `json:"code"` // HTTP status (201 on success), 0 if no answer
	Error    string              `json:"error,omitempty"`
}

// KubeCheckConfig configures KubeCheck.
type KubeCheckConfig struct {
	Checks []Check
	// TokenReview also creates a SelfSubjectReview.
	TokenReview bool
	// RESTConfig reaches the API server; nil means rest.InClusterConfig,
	// the pod's projected ServiceAccount token and KUBERNETES_SERVICE_HOST
	// and _PORT.
	RESTConfig *rest.Config
	// Timeout bounds each API call; zero means 10s.
	Timeout time.Duration
}

// KubeCheckReport is the outcome of KubeCheck.
type KubeCheckReport struct {
	Checks []CheckResult            // one per KubeCheckConfig.Checks, in order
	Review *SelfSubjectReviewResult // nil unless KubeCheckConfig.TokenReview
}

var selfSubjectReviews = schema.GroupVersionResource{Group: "authentication.k8s.io", Version: "v1", Resource: "selfsubjectreviews"}

// KubeCheck performs every check of cfg, and the SelfSubjectReview if asked,
// against the API server. It returns an error wrapping ErrAPIUnreachable,
// along with the full report, when some call got no answer, and a plain
// error when there is no usable client configuration.
func KubeCheck(ctx context.Context, cfg KubeCheckConfig) (KubeCheckReport, error) {
	restCfg := cfg.RESTConfig
	if restCfg == nil {
		c, err := rest.InClusterConfig()
		if err != nil {
			return KubeCheckReport{}, fmt.Errorf("build in-cluster config: %w", err)
		}
		restCfg = c
	}
	restCfg = rest.CopyConfig(restCfg)
	restCfg.UserAgent = "weft-testapp"
	restCfg.Timeout = cfg.Timeout
	if restCfg.Timeout <= 0 {
		restCfg.Timeout = 10 * time.Second
	}
	client, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return KubeCheckReport{}, fmt.Errorf("build kubernetes client: %w", err)
	}

	report := KubeCheckReport{Checks: make([]CheckResult, 0, len(cfg.Checks))}
	unreachable := 0
	for _, c := range cfg.Checks {
		r := runCheck(ctx, client, c)
		if r.Code == 0 {
			unreachable++
		}
		report.Checks = append(report.Checks, r)
	}
	if cfg.TokenReview {
		report.Review = selfSubjectReview(ctx, client)
		if report.Review.Code == 0 {
			unreachable++
		}
	}
	if unreachable > 0 {
		return report, fmt.Errorf("reach %s: %d of %d calls got no answer: %w", restCfg.Host, unreachable, len(cfg.Checks)+btoi(cfg.TokenReview), ErrAPIUnreachable)
	}
	return report, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func runCheck(ctx context.Context, client dynamic.Interface, c Check) CheckResult {
	r := CheckResult{Verb: c.Verb, Resource: c.Resource, Namespace: c.Namespace, Name: c.Name}
	res := client.Resource(c.gvr).Namespace(c.Namespace)
	var err error
	switch c.Verb {
	case "get":
		_, err = res.Get(ctx, c.Name, metav1.GetOptions{})
	case "list":
		var list *unstructured.UnstructuredList
		if list, err = res.List(ctx, metav1.ListOptions{}); err == nil {
			n := len(list.Items)
			r.Items = &n
		}
	case "watch":
		timeout := int64(1)
		w, werr := res.Watch(ctx, metav1.ListOptions{TimeoutSeconds: &timeout})
		if werr == nil {
			w.Stop()
		}
		err = werr
	default:
		err = fmt.Errorf("unknown verb %q", c.Verb)
	}
	r.Code, r.Error = answer(err, http.StatusOK)
	r.Allowed = r.Code != 0 && r.Code != http.StatusUnauthorized && r.Code != http.StatusForbidden
	return r
}

// answer returns the HTTP status that err carries (success for nil, 0 when
// the API server did not answer) and err's text.
func answer(err error, success int) (int, string) {
	if err == nil {
		return success, ""
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Code != 0 {
		return int(status.Status().Code), err.Error()
	}
	return 0, err.Error()
}

func selfSubjectReview(ctx context.Context, client dynamic.Interface) *SelfSubjectReviewResult {
	req := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "authentication.k8s.io/v1",
		"kind":       "SelfSubjectReview",
	}}
	out, err := client.Resource(selfSubjectReviews).Create(ctx, req, metav1.CreateOptions{})
	r := &SelfSubjectReviewResult{Groups: []string{}, Extra: map[string][]string{}}
	r.Code, r.Error = answer(err, http.StatusCreated)
	if err != nil {
		return r
	}
	var review authnv1.SelfSubjectReview
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(out.Object, &review); err != nil {
		r.Error = fmt.Sprintf("decode selfsubjectreview: %v", err)
		return r
	}
	u := review.Status.UserInfo
	r.Username, r.UID = u.Username, u.UID
	r.Groups = append(r.Groups, u.Groups...)
	for k, v := range u.Extra {
		r.Extra[k] = append([]string(nil), v...)
	}
	return r
}
