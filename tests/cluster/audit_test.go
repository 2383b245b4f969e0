package cluster

import (
	"slices"
	"strings"
	"testing"
)

const testManifests = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: weft-agent, namespace: weft-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: weft-agent}
rules:
- apiGroups: [""]
  resources: [pods, pods/status]
  verbs: [get, watch]
- nonResourceURLs: [/metrics*]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: weft-agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: weft-agent}
subjects:
- {kind: ServiceAccount, name: weft-agent, namespace: weft-system}
- {kind: User, name: somebody}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ca, namespace: weft-system}
rules:
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [weft-ca]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ca, namespace: weft-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ca}
subjects:
- {kind: ServiceAccount, name: weft-operator, namespace: weft-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: builtin, namespace: weft-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {kind: ServiceAccount, name: weft-operator, namespace: weft-system}
`

const (
	agentUser    = "system:serviceaccount:weft-system:weft-agent"
	operatorUser = "system:serviceaccount:weft-system:weft-operator"
)

func TestRBACGrantsOf(t *testing.T) {
	grants, err := RBACGrantsOf([]byte(testManifests))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, g := range grants {
		keys = append(keys, g.Key())
	}
	want := []string{
		agentUser + " get /metrics*",
		agentUser + " get pods",
		agentUser + " get pods/status",
		agentUser + " watch pods",
		agentUser + " watch pods/status",
		operatorUser + " get secrets in weft-system names weft-ca",
	}
	if !slices.Equal(keys, want) {
		t.Errorf("RBACGrantsOf keys =\n%s\nwant\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
}

func TestUnusedGrants(t *testing.T) {
	grants, err := RBACGrantsOf([]byte(testManifests))
	if err != nil {
		t.Fatal(err)
	}
	log := strings.Join([]string{
		// The agent gets a pod and its status, and reads /metrics/x.
		`{"stage":"ResponseComplete","verb":"get","user":{"username":"` + agentUser + `"},"objectRef":{"resource":"pods","namespace":"a","name":"p"},"responseStatus":{"code":200}}`,
		`{"stage":"ResponseComplete","verb":"get","user":{"username":"` + agentUser + `"},"objectRef":{"resource":"pods","subresource":"status","namespace":"a","name":"p"},"responseStatus":{"code":200}}`,
		`{"stage":"ResponseComplete","verb":"get","requestURI":"/metrics/x?y","user":{"username":"` + agentUser + `"},"responseStatus":{"code":200}}`,
		// A refused watch does not use the grant.
		`{"stage":"ResponseComplete","verb":"watch","user":{"username":"` + agentUser + `"},"objectRef":{"resource":"pods"},"responseStatus":{"code":403}}`,
		// Only the RequestReceived stage of a watch of pods/status: not counted.
		`{"stage":"RequestReceived","verb":"watch","user":{"username":"` + agentUser + `"},"objectRef":{"resource":"pods","subresource":"status"}}`,
		// The operator gets another Secret and weft-ca in another namespace.
		`{"stage":"ResponseComplete","verb":"get","user":{"username":"` + operatorUser + `"},"objectRef":{"resource":"secrets","namespace":"weft-system","name":"other"},"responseStatus":{"code":200}}`,
		`{"stage":"ResponseComplete","verb":"get","user":{"username":"` + operatorUser + `"},"objectRef":{"resource":"secrets","namespace":"default","name":"weft-ca"},"responseStatus":{"code":200}}`,
		// A line being written when the log is read.
		`{"stage":"ResponseComp`,
	}, "\n")
	events, err := parseAuditLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 6 {
		t.Fatalf("parsed %d events, want 6 (RequestReceived and the partial line dropped)", len(events))
	}
	var unused []string
	for _, g := range UnusedGrants(grants, events) {
		unused = append(unused, g.Key())
	}
	want := []string{
		agentUser + " watch pods",
		agentUser + " watch pods/status",
		operatorUser + " get secrets in weft-system names weft-ca",
	}
	if !slices.Equal(unused, want) {
		t.Errorf("UnusedGrants =\n%s\nwant\n%s", strings.Join(unused, "\n"), strings.Join(want, "\n"))
	}
	// The same operator request on the right name and namespace uses it.
	events = append(events, AuditEvent{Verb: "get"})
	e := &events[len(events)-1]
	e.User.Username = operatorUser
	e.ObjectRef = &AuditObjectRef{Resource: "secrets", Namespace: "weft-system", Name: "weft-ca"}
	if n := len(UnusedGrants(grants, events)); n != 2 {
		t.Errorf("after a get of weft-ca in weft-system %d grants unused, want 2", n)
	}
}
