package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// AuditEvent is the part of an audit.k8s.io/v1 Event that tests read from
// the API server's audit log (the harness logs every request but health
// checks at level Metadata: who, what, on which object, with which result).
type AuditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	ObjectRef      *AuditObjectRef `json:"objectRef"`
	ResponseStatus *struct {
		Code    int    `json:"code"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"responseStatus"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
}

// AuditObjectRef is the object an audited request was about.
type AuditObjectRef struct {
	Resource    string `json:"resource"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	APIGroup    string `json:"apiGroup"`
	APIVersion  string `json:"apiVersion"`
	Subresource string `json:"subresource"`
}

// Code is the response's HTTP status, 0 when the stage has none.
func (e *AuditEvent) Code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

// String is a one-line account of the request.
func (e *AuditEvent) String() string {
	var what string
	if r := e.ObjectRef; r != nil {
		what = r.Resource
		if r.Subresource != "" {
			what += "/" + r.Subresource
		}
		if r.APIGroup != "" {
			what += "." + r.APIGroup
		}
		if r.Namespace != "" {
			what += " in " + r.Namespace
		}
		if r.Name != "" {
			what += " named " + r.Name
		}
	} else {
		what = e.RequestURI
	}
	return fmt.Sprintf("%s %s %s → %d", e.User.Username, e.Verb, what, e.Code())
}

// ReadAuditLog parses the API server's audit log (JSON lines) at path,
// keeping the events of a finished or started response (a watch that is
// still open has only ResponseStarted).
func ReadAuditLog(path string) ([]AuditEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()
	return parseAuditLog(f)
}

func parseAuditLog(r io.Reader) ([]AuditEvent, error) {
	var out []AuditEvent
	rd := bufio.NewReaderSize(r, 1<<20)
	for line := 1; ; line++ {
		b, err := rd.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			var e AuditEvent
			if jerr := json.Unmarshal(b, &e); jerr != nil {
				// The API server may be writing the last line right now.
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("parse audit log line %d: %w", line, jerr)
			}
			if e.Stage == "ResponseComplete" || e.Stage == "ResponseStarted" || e.Stage == "Panic" {
				out = append(out, e)
			}
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
	}
	return out, nil
}

// RBACGrant is one verb on one resource (or non-resource URL) that a
// Role or ClusterRole rule grants one ServiceAccount through a binding: the
// unit RBAC coverage is judged in.
type RBACGrant struct {
	// User is the ServiceAccount's user name,
	// system:serviceaccount:<namespace>:<name>.
	User string
	// Namespace limits the grant (a Role, or a ClusterRole bound by a
	// RoleBinding); empty is cluster-wide.
	Namespace   string
	Verb        string
	APIGroup    string
	Resource    string
	Subresource string
	// ResourceNames limits the grant to these object names.
	ResourceNames []string
	// NonResourceURL is set for non-resource rules (and Resource is empty).
	NonResourceURL string
	// Source names the role, its rule index and the binding.
	Source string
}

// Key identifies the grant in messages and allow-lists:
// "<user> <verb> <resource>[/<sub>][.<group>][ in <ns>][ names a,b]".
func (g RBACGrant) Key() string {
	var b strings.Builder
	b.WriteString(g.User + " " + g.Verb + " ")
	if g.NonResourceURL != "" {
		b.WriteString(g.NonResourceURL)
		return b.String()
	}
	b.WriteString(g.Resource)
	if g.Subresource != "" {
		b.WriteString("/" + g.Subresource)
	}
	if g.APIGroup != "" {
		b.WriteString("." + g.APIGroup)
	}
	if g.Namespace != "" {
		b.WriteString(" in " + g.Namespace)
	}
	if len(g.ResourceNames) > 0 {
		b.WriteString(" names " + strings.Join(g.ResourceNames, ","))
	}
	return b.String()
}

// UsedBy reports whether e is a request the grant authorizes and was made
// under it: same user, verb, group, resource and subresource, in its
// namespace and on one of its names when it has them, and not refused.
func (g RBACGrant) UsedBy(e *AuditEvent) bool {
	if e.User.Username != g.User || (g.Verb != "*" && e.Verb != g.Verb) || e.Code() == 401 || e.Code() == 403 {
		return false
	}
	if g.NonResourceURL != "" {
		if e.ObjectRef != nil {
			return false
		}
		path, _, _ := strings.Cut(e.RequestURI, "?")
		if p, ok := strings.CutSuffix(g.NonResourceURL, "*"); ok {
			return strings.HasPrefix(path, p)
		}
		return path == g.NonResourceURL
	}
	r := e.ObjectRef
	if r == nil {
		return false
	}
	if g.APIGroup != "*" && r.APIGroup != g.APIGroup {
		return false
	}
	// "*" covers every resource and subresource; "pods/*" every
	// subresource of pods.
	if g.Resource != "*" && (r.Resource != g.Resource || (g.Subresource != "*" && r.Subresource != g.Subresource)) {
		return false
	}
	if g.Namespace != "" && r.Namespace != g.Namespace {
		return false
	}
	return len(g.ResourceNames) == 0 || slices.Contains(g.ResourceNames, r.Name)
}

// RBACGrantsOf expands the Roles and ClusterRoles of rendered manifests
// (e.g. `helm template` output, hooks included) into one RBACGrant per
// ServiceAccount subject, verb, API group and resource, following the
// RoleBindings and ClusterRoleBindings of the same manifests. A binding to
// a role the manifests do not define (e.g. a built-in ClusterRole) grants
// nothing here.
func RBACGrantsOf(manifests []byte) ([]RBACGrant, error) {
	roles := map[string]rbacv1.ClusterRole{} // "Role/<ns>/<name>" or "ClusterRole/<name>"
	type binding struct {
		kind, namespace, name string
		ref                   rbacv1.RoleRef
		subjects              []rbacv1.Subject
	}
	var bindings []binding
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode manifests: %w", err)
		}
		if raw == nil {
			continue
		}
		kind, _ := raw["kind"].(string)
		b, err := yaml.Marshal(raw)
		if err != nil {
			return nil, err
		}
		switch kind {
		case "Role":
			var r rbacv1.Role
			if err := yaml.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("decode role: %w", err)
			}
			roles["Role/"+r.Namespace+"/"+r.Name] = rbacv1.ClusterRole{ObjectMeta: r.ObjectMeta, Rules: r.Rules}
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("decode clusterrole: %w", err)
			}
			roles["ClusterRole/"+r.Name] = r
		case "RoleBinding":
			var rb rbacv1.RoleBinding
			if err := yaml.Unmarshal(b, &rb); err != nil {
				return nil, fmt.Errorf("decode rolebinding: %w", err)
			}
			bindings = append(bindings, binding{kind, rb.Namespace, rb.Name, rb.RoleRef, rb.Subjects})
		case "ClusterRoleBinding":
			var crb rbacv1.ClusterRoleBinding
			if err := yaml.Unmarshal(b, &crb); err != nil {
				return nil, fmt.Errorf("decode clusterrolebinding: %w", err)
			}
			bindings = append(bindings, binding{kind, "", crb.Name, crb.RoleRef, crb.Subjects})
		}
	}
	var out []RBACGrant
	for _, bd := range bindings {
		key := "ClusterRole/" + bd.ref.Name
		ns := bd.namespace // a ClusterRole bound by a RoleBinding applies in its namespace
		if bd.ref.Kind == "Role" {
			key = "Role/" + bd.namespace + "/" + bd.ref.Name
		}
		role, ok := roles[key]
		if !ok {
			continue
		}
		for _, s := range bd.subjects {
			if s.Kind != rbacv1.ServiceAccountKind {
				continue
			}
			user := "system:serviceaccount:" + s.Namespace + ":" + s.Name
			for i, rule := range role.Rules {
				src := fmt.Sprintf("%s rule %d (bound by %s %s)", strings.ReplaceAll(key, "/", " "), i, bd.kind, bd.name)
				for _, verb := range rule.Verbs {
					for _, u := range rule.NonResourceURLs {
						out = append(out, RBACGrant{User: user, Verb: verb, NonResourceURL: u, Source: src})
					}
					for _, group := range rule.APIGroups {
						for _, res := range rule.Resources {
							r, sub, _ := strings.Cut(res, "/")
							out = append(out, RBACGrant{
								User: user, Namespace: ns, Verb: verb, APIGroup: group, Resource: r, Subresource: sub,
								ResourceNames: rule.ResourceNames, Source: src,
							})
						}
					}
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

// UnusedGrants returns the grants no event used.
func UnusedGrants(grants []RBACGrant, events []AuditEvent) []RBACGrant {
	var unused []RBACGrant
	for _, g := range grants {
		used := false
		for i := range events {
			if g.UsedBy(&events[i]) {
				used = true
				break
			}
		}
		if !used {
			unused = append(unused, g)
		}
	}
	return unused
}
