package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	authnv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/tests/cluster"
)

// flowReaderToken creates ServiceAccount sa's token, with sa bound to the
// chart's weft-flows-reader, in a file.
func flowReaderToken(t *testing.T, c *cluster.Cluster, ns, sa string) string {
	t.Helper()
	ctx := testCtx(t)
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "observe-" + ns + "-" + sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "weft-flows-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return saToken(t, c, ns, sa)
}

func saToken(t *testing.T, c *cluster.Cluster, ns, sa string) string {
	t.Helper()
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(testCtx(t), sa,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](1800)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create token of %s/%s: %v", ns, sa, err)
	}
	f := filepath.Join(t.TempDir(), sa+".token")
	if err := os.WriteFile(f, []byte(tok.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func logFlows(t *testing.T, flows ...*flowpb.Flow) {
	t.Helper()
	for _, f := range flows {
		if f != nil {
			t.Logf("record: %s", protojson.MarshalOptions{UseProtoNames: true}.Format(f))
		}
	}
}

// hubbleCLI is the hubble binary hack/hubble.sh builds (it builds it when
// the cache is cold).
func hubbleCLI(t *testing.T) string {
	t.Helper()
	repo, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(repo, "hack", "versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	var version string
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "CILIUM_VERSION="); ok {
			version = v
		}
	}
	if version == "" {
		t.Fatal("CILIUM_VERSION missing from hack/versions.env")
	}
	cache := filepath.Join(repo, ".cache")
	if c := os.Getenv("WEFT_CACHE"); c != "" {
		cache = c
	}
	dir := filepath.Join(cache, "bin", "hubble-"+version)
	if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
		cmd := exec.Command("bash", filepath.Join(repo, "hack", "hubble.sh"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build hubble %s: %v\n%s", version, err, out)
		}
	}
	return filepath.Join(dir, "hubble")
}

// runCLI runs a command line tool and returns its stdout and stderr; a
// non-zero exit is an *exec.ExitError.
func runCLI(ctx context.Context, timeout time.Duration, name string, args ...string) ([]byte, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// hubble reads and may write its config under $HOME; keep it away from
	// the user's.
	cmd.Env = append(os.Environ(), "HOME="+os.TempDir(), "NO_COLOR=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return []byte(stdout.String()), []byte(stderr.String()), err
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// decodeFlows decodes `-o json` output: one GetFlowsResponse per line.
func decodeFlows(t *testing.T, out []byte) []*observerpb.GetFlowsResponse {
	t.Helper()
	var rs []*observerpb.GetFlowsResponse
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		r := &observerpb.GetFlowsResponse{}
		if err := protojson.Unmarshal([]byte(line), r); err != nil {
			t.Fatalf("decode -o json line %q: %v", line, err)
		}
		rs = append(rs, r)
	}
	return rs
}

func flowsOf(rs []*observerpb.GetFlowsResponse) []*flowpb.Flow {
	var out []*flowpb.Flow
	for _, r := range rs {
		if f := r.GetFlow(); f != nil {
			out = append(out, f)
		}
	}
	return out
}

func containsFlow(flows []*flowpb.Flow, want *flowpb.Flow) bool {
	for _, f := range flows {
		if proto.Equal(f, want) {
			return true
		}
	}
	return false
}

// flowExtras are weft's extras of a flow (the google.protobuf.Struct in
// Flow.extensions), numbers printed as integers.
func flowExtras(f *flowpb.Flow) map[string]string {
	out := map[string]string{}
	var s structpb.Struct
	if f.GetExtensions() == nil || f.GetExtensions().UnmarshalTo(&s) != nil {
		return out
	}
	for k, v := range s.GetFields() {
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			out[k] = x.StringValue
		case *structpb.Value_NumberValue:
			out[k] = fmt.Sprint(int64(x.NumberValue))
		default:
			b, _ := protojson.Marshal(v)
			out[k] = string(b)
		}
	}
	return out
}

// weftIdentity is the numeric identity of a SPIFFE ID in weft's flows
// (api/flows/v1): FNV-1a 32 of the ID with bit 24 set, written out here
// rather than imported, so the test checks the contract.
func weftIdentity(spiffeID string) uint32 {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(spiffeID); i++ {
		h ^= uint32(spiffeID[i])
		h *= prime
	}
	return h | 0x1000000
}
