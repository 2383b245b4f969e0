package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	splitv1alpha4 "github.com/weftmesh/weft/api/smi/split/v1alpha4"
	"github.com/weftmesh/weft/tests/cluster"
)

func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// smiKind describes one SMI resource for the tests: where it is served and
// the Go type that must decode it.
type smiKind struct {
	gvr     schema.GroupVersionResource
	newType func() any
}

var smiKinds = map[string]smiKind{
	"TrafficTarget":  {accessv1alpha3.SchemeGroupVersion.WithResource("traffictargets"), func() any { return &accessv1alpha3.TrafficTarget{} }},
	"HTTPRouteGroup": {specsv1alpha4.SchemeGroupVersion.WithResource("httproutegroups"), func() any { return &specsv1alpha4.HTTPRouteGroup{} }},
	"TCPRoute":       {specsv1alpha4.SchemeGroupVersion.WithResource("tcproutes"), func() any { return &specsv1alpha4.TCPRoute{} }},
	"TrafficSplit":   {splitv1alpha4.SchemeGroupVersion.WithResource("trafficsplits"), func() any { return &splitv1alpha4.TrafficSplit{} }},
}

// kubectl runs the cluster's kubectl, as a user would, with a private
// discovery cache: a cache left by an earlier cluster at the same address
// would not know the CRDs.
type kubectl struct {
	path, kubeconfig, cacheDir string
}

func newKubectl(tb testing.TB, c *cluster.Cluster) *kubectl {
	tb.Helper()
	path, err := c.Kubectl()
	if err != nil {
		tb.Fatal(err)
	}
	return &kubectl{path: path, kubeconfig: c.Kubeconfig(), cacheDir: tb.TempDir()}
}

// run returns stdout; a non-zero exit is an error carrying stderr.
func (k *kubectl) run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.path, append([]string{"--kubeconfig", k.kubeconfig, "--cache-dir", k.cacheDir}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (k *kubectl) mustRun(tb testing.TB, stdin string, args ...string) string {
	tb.Helper()
	out, err := k.run(testCtx(tb), stdin, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// crdDir is the chart's CRD folder, as Helm installs it.
func crdDir(tb testing.TB) string {
	tb.Helper()
	repo, err := cluster.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return filepath.Join(repo, "install", "helm", "weft", "crds")
}

// object is one document of a manifest.
type object struct {
	Kind, Name, Namespace string
	Spec                  any // JSON-decoded
}

// parseManifest splits a multi-document YAML manifest into its objects.
func parseManifest(tb testing.TB, manifest, defaultNamespace string) []object {
	tb.Helper()
	var objs []object
	for _, doc := range strings.Split(manifest, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var m struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Spec any `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			tb.Fatalf("parse manifest: %v\n%s", err, doc)
		}
		ns := m.Metadata.Namespace
		if ns == "" {
			ns = defaultNamespace
		}
		objs = append(objs, object{Kind: m.Kind, Name: m.Metadata.Name, Namespace: ns, Spec: jsonValue(tb, m.Spec)})
	}
	return objs
}

// jsonValue normalises v to what encoding/json decodes from its JSON form
// (numbers as float64), so values from YAML, unstructured objects and Go
// types compare equal when they mean the same.
func jsonValue(tb testing.TB, v any) any {
	tb.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("marshal %T: %v", v, err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		tb.Fatalf("unmarshal %s: %v", data, err)
	}
	return out
}

// decodeStrict decodes JSON into a Go type, failing on any field the type
// does not have: what the API server stores must survive a typed client.
func decodeStrict(data []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

// dropEmpty removes empty lists and maps: the Go types' omitempty drops
// them, and in these APIs an empty list means what an absent one does (a
// TCPRoute's ports: [] is every port, as is no ports).
func dropEmpty(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			e = dropEmpty(e)
			if isEmpty(e) {
				continue
			}
			out[k] = e
		}
		return out
	case []any:
		out := make([]any, 0, len(v))
		for _, e := range v {
			out = append(out, dropEmpty(e))
		}
		return out
	}
	return v
}

func isEmpty(v any) bool {
	rv := reflect.ValueOf(v)
	return v == nil || (rv.Kind() == reflect.Map || rv.Kind() == reflect.Slice) && rv.Len() == 0
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(data)
}

// restClient is a typed client for one SMI group version, built from the
// api/ package's AddToScheme as weft-operator would.
func restClient(tb testing.TB, c *cluster.Cluster, gv schema.GroupVersion, addToScheme func(*runtime.Scheme) error) *rest.RESTClient {
	tb.Helper()
	scheme := runtime.NewScheme()
	if err := addToScheme(scheme); err != nil {
		tb.Fatalf("add %s to scheme: %v", gv, err)
	}
	cfg := rest.CopyConfig(c.RestConfig)
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		tb.Fatalf("create client for %s: %v", gv, err)
	}
	return rc
}

// table is kubectl get's output, split into cells by the header's column
// positions (cells may contain spaces, e.g. a condition message).
type table struct {
	header []string
	rows   map[string]map[string]string // NAME → column → cell
}

func parseTable(tb testing.TB, out string) table {
	tb.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || lines[0] == "" {
		tb.Fatalf("kubectl get printed nothing")
	}
	var starts []int
	t := table{rows: map[string]map[string]string{}}
	head := lines[0]
	for i := 0; i < len(head); i++ {
		if head[i] != ' ' && (i == 0 || head[i-1] == ' ') {
			starts = append(starts, i)
			end := strings.IndexByte(head[i:], ' ')
			if end < 0 {
				end = len(head) - i
			}
			t.header = append(t.header, head[i:i+end])
		}
	}
	for _, line := range lines[1:] {
		row := map[string]string{}
		for j, start := range starts {
			end := len(line)
			if j+1 < len(starts) {
				end = min(starts[j+1], len(line))
			}
			if start < end {
				row[t.header[j]] = strings.TrimSpace(line[start:end])
			}
		}
		t.rows[row["NAME"]] = row
	}
	return t
}
