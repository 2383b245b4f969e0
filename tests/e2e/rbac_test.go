package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/tests/cluster"
)

// unusedRBACAllowed lists chart RBAC grants (RBACGrant.Key) that the
// install test cannot be expected to use, each with the reason. Keep it
// short: a grant nobody uses is a privilege nobody needs.
var unusedRBACAllowed = map[string]string{}

// weftUserPrefix is the user name prefix of weft's ServiceAccounts.
const weftUserPrefix = "system:serviceaccount:" + cluster.WeftNamespace + ":weft-"

// checkRBACFromAudit derives from the API server's audit log of the whole
// run that (a) no request of a weft ServiceAccount was refused while its
// RBAC was installed, and (b) every grant of the chart's Roles and
// ClusterRoles (hooks included) was used by the ServiceAccount it is bound
// to at least once.
func checkRBACFromAudit(t *testing.T, c *cluster.Cluster, uninstallStarted time.Time) {
	chart, err := cluster.ChartDir()
	if err != nil {
		t.Fatal(err)
	}
	// helm template does not ask the cluster; the chart's kubeVersion
	// constraint is checked against this one.
	v, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"template", cluster.ReleaseName, chart, "-n", cluster.WeftNamespace, "--kube-version", v.GitVersion}
	for _, s := range c.HelmValues() {
		args = append(args, "--set", s)
	}
	manifests, err := c.RunHelm(testCtx(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	grants, err := cluster.RBACGrantsOf(manifests)
	if err != nil {
		t.Fatal(err)
	}
	var weftGrants []cluster.RBACGrant
	for _, g := range grants {
		if strings.HasPrefix(g.User, weftUserPrefix) {
			weftGrants = append(weftGrants, g)
		}
	}
	if len(weftGrants) == 0 {
		t.Fatalf("the chart grants weft's ServiceAccounts nothing: RBAC parsing is broken")
	}
	events, err := cluster.ReadAuditLog(c.AuditLog())
	if err != nil {
		t.Fatal(err)
	}
	revoked := revocationTimes(t, manifests, events)

	// (a) No refusal while the ServiceAccount's RBAC existed. Once Helm
	// deletes a binding (or the ServiceAccount) refusals are the deletion's
	// consequence, not a missing rule: they are logged only.
	type refusal struct {
		what  string
		count int
	}
	refused, late := map[string]*refusal{}, map[string]*refusal{}
	weftRequests := 0
	for i := range events {
		e := &events[i]
		if !strings.HasPrefix(e.User.Username, weftUserPrefix) {
			continue
		}
		weftRequests++
		if e.Code() != 403 {
			continue
		}
		key := e.String()
		set := refused
		if cut, ok := revoked[e.User.Username]; ok && !e.RequestReceivedTimestamp.Before(cut) {
			set = late
		}
		if set[key] == nil {
			set[key] = &refusal{what: key}
		}
		set[key].count++
	}
	if weftRequests == 0 {
		t.Fatalf("no request of a weft ServiceAccount in the audit log %s: the log or its policy is broken", c.AuditLog())
	}
	list := func(m map[string]*refusal) []string {
		var out []string
		for _, r := range m {
			out = append(out, fmt.Sprintf("%s (×%d)", r.what, r.count))
		}
		sort.Strings(out)
		return out
	}
	for _, r := range list(refused) {
		t.Errorf("refused while its RBAC was installed: %s", r)
	}
	if len(late) > 0 {
		t.Logf("refused after Helm revoked the ServiceAccount's RBAC (uninstall started %s): %s",
			uninstallStarted.Format(time.TimeOnly), strings.Join(list(late), "; "))
	}

	// (b) Every grant used.
	unused := cluster.UnusedGrants(weftGrants, events)
	var streamed []string
	for _, g := range unused {
		// client-go's informers list with a streaming list (a watch with
		// sendInitialEvents=true), which the API server authorizes as
		// watch; they fall back to list on API servers without it (the
		// chart supports Kubernetes ≥ 1.30). Such a list grant is used.
		if g.Verb == "list" && streamedList(g, events) {
			streamed = append(streamed, g.Key())
			continue
		}
		if reason, ok := unusedRBACAllowed[g.Key()]; ok {
			t.Logf("unused but allowed: %s — %s", g.Key(), reason)
			continue
		}
		t.Errorf("RBAC grant never used: %s, from %s: remove it from the chart, or make this test exercise the path that needs it", g.Key(), g.Source)
	}
	t.Logf("audit log: %d requests of weft ServiceAccounts; %d of %d chart RBAC grants used, %d more list grants by streaming lists: %s",
		weftRequests, len(weftGrants)-len(unused), len(weftGrants), len(streamed), strings.Join(streamed, "; "))
}

// streamedList reports whether some event is a streaming list (watch with
// sendInitialEvents=true) within list grant g.
func streamedList(g cluster.RBACGrant, events []cluster.AuditEvent) bool {
	w := g
	w.Verb = "watch"
	for i := range events {
		e := &events[i]
		if e.Verb == "watch" && strings.Contains(e.RequestURI, "sendInitialEvents=true") && w.UsedBy(e) {
			return true
		}
	}
	return false
}

// revocationTimes returns, per weft ServiceAccount user, when Helm first
// deleted its ServiceAccount or a binding granting it something (from the
// admin's delete requests in the audit log).
func revocationTimes(t *testing.T, manifests []byte, events []cluster.AuditEvent) map[string]time.Time {
	t.Helper()
	objects := map[string][]string{} // "<resource> <namespace>/<name>" → users
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode manifests: %v", err)
		}
		kind, _ := raw["kind"].(string)
		b, _ := yaml.Marshal(raw)
		switch kind {
		case "ServiceAccount":
			var sa struct {
				Metadata struct{ Name, Namespace string }
			}
			if err := yaml.Unmarshal(b, &sa); err == nil {
				key := "serviceaccounts " + sa.Metadata.Namespace + "/" + sa.Metadata.Name
				objects[key] = append(objects[key], "system:serviceaccount:"+sa.Metadata.Namespace+":"+sa.Metadata.Name)
			}
		case "RoleBinding", "ClusterRoleBinding":
			var rb rbacv1.RoleBinding // a ClusterRoleBinding decodes the same
			if err := yaml.Unmarshal(b, &rb); err != nil {
				continue
			}
			key := strings.ToLower(kind) + "s " + rb.Namespace + "/" + rb.Name
			for _, s := range rb.Subjects {
				if s.Kind == rbacv1.ServiceAccountKind {
					objects[key] = append(objects[key], "system:serviceaccount:"+s.Namespace+":"+s.Name)
				}
			}
		}
	}
	out := map[string]time.Time{}
	for i := range events {
		e := &events[i]
		if e.Verb != "delete" || e.ObjectRef == nil || strings.HasPrefix(e.User.Username, "system:serviceaccount:") {
			continue
		}
		for _, user := range objects[e.ObjectRef.Resource+" "+e.ObjectRef.Namespace+"/"+e.ObjectRef.Name] {
			if cut, ok := out[user]; !ok || e.RequestReceivedTimestamp.Before(cut) {
				out[user] = e.RequestReceivedTimestamp
			}
		}
	}
	return out
}
