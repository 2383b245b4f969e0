package smi_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/api/smi"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	specsv1alpha4 "github.com/weftmesh/weft/api/smi/specs/v1alpha4"
	splitv1alpha4 "github.com/weftmesh/weft/api/smi/split/v1alpha4"
)

// crdDir is the chart folder hack/codegen.sh writes the CRDs to.
const crdDir = "../../install/helm/weft/crds"

// crd is the part of an apiextensions.k8s.io/v1 CustomResourceDefinition
// the tests read (the module does not depend on apiextensions-apiserver).
type crd struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind       string   `json:"kind"`
			ListKind   string   `json:"listKind"`
			Plural     string   `json:"plural"`
			Singular   string   `json:"singular"`
			ShortNames []string `json:"shortNames"`
			Categories []string `json:"categories"`
		} `json:"names"`
		Scope    string `json:"scope"`
		Versions []struct {
			Name         string `json:"name"`
			Served       bool   `json:"served"`
			Storage      bool   `json:"storage"`
			Subresources struct {
				Status *struct{} `json:"status"`
			} `json:"subresources"`
			AdditionalPrinterColumns []struct {
				Name     string `json:"name"`
				Type     string `json:"type"`
				JSONPath string `json:"jsonPath"`
				Priority int32  `json:"priority"`
			} `json:"additionalPrinterColumns"`
			Schema struct {
				OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// want is what one CRD must say; columns are printer column names in
// order, with "(wide)" for those kubectl shows only with -o wide.
type want struct {
	gv          schema.GroupVersion
	addToScheme func(*runtime.Scheme) error
	kind        string
	plural      string
	shortName   string
	columns     []string
}

var wantCRDs = []want{
	{accessv1alpha3.SchemeGroupVersion, accessv1alpha3.AddToScheme, "TrafficTarget", "traffictargets", "tt",
		[]string{"Destination", "Sources", "Accepted", "Reason", "Age", "Message(wide)"}},
	{specsv1alpha4.SchemeGroupVersion, specsv1alpha4.AddToScheme, "HTTPRouteGroup", "httproutegroups", "htr",
		[]string{"Accepted", "Reason", "Age", "Message(wide)"}},
	{specsv1alpha4.SchemeGroupVersion, specsv1alpha4.AddToScheme, "TCPRoute", "tcproutes", "tr",
		[]string{"Ports", "Accepted", "Reason", "Age", "Message(wide)"}},
	{splitv1alpha4.SchemeGroupVersion, splitv1alpha4.AddToScheme, "TrafficSplit", "trafficsplits", "ts",
		[]string{"Service", "Backends", "Accepted", "Reason", "Age", "Message(wide)"}},
}

// TestCRDs: the chart's crds/ folder holds exactly one manifest per SMI
// kind, each naming the group, version, kind and names the Go types
// register, with a status subresource, the printer columns, and conditions
// as a list map keyed by type.
func TestCRDs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var wantFiles []string
	for _, w := range wantCRDs {
		wantFiles = append(wantFiles, filepath.Join(crdDir, w.gv.Group+"_"+w.plural+".yaml"))
	}
	slices.Sort(wantFiles)
	if !slices.Equal(files, wantFiles) {
		t.Errorf("CRD files = %v, want %v (run hack/codegen.sh)", files, wantFiles)
	}
	for _, w := range wantCRDs {
		t.Run(w.kind, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(crdDir, w.gv.Group+"_"+w.plural+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var c crd
			if err := yaml.Unmarshal(data, &c); err != nil {
				t.Fatalf("parse CRD: %v", err)
			}
			checkCRD(t, c, w)
		})
	}
}

func checkCRD(t *testing.T, c crd, w want) {
	t.Helper()
	if c.APIVersion != "apiextensions.k8s.io/v1" || c.Kind != "CustomResourceDefinition" {
		t.Errorf("apiVersion, kind = %s, %s; want apiextensions.k8s.io/v1, CustomResourceDefinition", c.APIVersion, c.Kind)
	}
	if got, want := c.Metadata.Name, w.plural+"."+w.gv.Group; got != want {
		t.Errorf("metadata.name = %q, want %q", got, want)
	}
	n := c.Spec.Names
	if c.Spec.Group != w.gv.Group || n.Kind != w.kind || n.ListKind != w.kind+"List" || n.Plural != w.plural ||
		n.Singular != strings.ToLower(w.kind) || c.Spec.Scope != "Namespaced" {
		t.Errorf("group %s, names %+v, scope %s; want group %s, kind %s, plural %s, Namespaced", c.Spec.Group, n, c.Spec.Scope, w.gv.Group, w.kind, w.plural)
	}
	if !slices.Equal(n.ShortNames, []string{w.shortName}) || !slices.Equal(n.Categories, []string{"smi"}) {
		t.Errorf("shortNames %v, categories %v; want [%s], [smi]", n.ShortNames, n.Categories, w.shortName)
	}

	// The Go types register exactly this group, version and kind.
	scheme := runtime.NewScheme()
	if err := w.addToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{w.kind, w.kind + "List"} {
		if gvk := w.gv.WithKind(kind); !scheme.Recognizes(gvk) {
			t.Errorf("AddToScheme does not register %s", gvk)
		}
	}

	if len(c.Spec.Versions) != 1 {
		t.Fatalf("%d versions, want 1 (%s)", len(c.Spec.Versions), w.gv.Version)
	}
	v := c.Spec.Versions[0]
	if v.Name != w.gv.Version || !v.Served || !v.Storage {
		t.Errorf("version %s served=%v storage=%v, want %s served and stored", v.Name, v.Served, v.Storage, w.gv.Version)
	}
	if v.Subresources.Status == nil {
		t.Error("no status subresource")
	}
	var cols []string
	for _, col := range v.AdditionalPrinterColumns {
		name := col.Name
		if col.Priority > 0 {
			name += "(wide)"
		}
		cols = append(cols, name)
		if col.Name == "Accepted" || col.Name == "Reason" || col.Name == "Message" {
			if want := `.status.conditions[?(@.type=="` + smi.ConditionAccepted + `")].`; !strings.HasPrefix(col.JSONPath, want) {
				t.Errorf("column %s jsonPath = %q, want it to read the %s condition (%s…)", col.Name, col.JSONPath, smi.ConditionAccepted, want)
			}
		}
		if col.Name == "Age" && (col.Type != "date" || col.JSONPath != ".metadata.creationTimestamp") {
			t.Errorf("column Age = %s %s, want date .metadata.creationTimestamp", col.Type, col.JSONPath)
		}
	}
	if !slices.Equal(cols, w.columns) {
		t.Errorf("printer columns = %v, want %v", cols, w.columns)
	}

	status := property(t, v.Schema.OpenAPIV3Schema, "status")
	conds := property(t, status, "conditions")
	if conds["x-kubernetes-list-type"] != "map" || !equalAny(conds["x-kubernetes-list-map-keys"], []string{"type"}) {
		t.Errorf("status.conditions list type %v keys %v, want map keyed by type", conds["x-kubernetes-list-type"], conds["x-kubernetes-list-map-keys"])
	}
	if og := property(t, status, "observedGeneration"); og["type"] != "integer" {
		t.Errorf("status.observedGeneration type = %v, want integer", og["type"])
	}
	if req, _ := v.Schema.OpenAPIV3Schema["required"].([]any); !slices.Contains(req, any("spec")) {
		t.Errorf("required = %v, want spec required", req)
	}
}

// property returns the schema of a named property of an object schema.
func property(t *testing.T, s map[string]any, name string) map[string]any {
	t.Helper()
	props, _ := s["properties"].(map[string]any)
	p, ok := props[name].(map[string]any)
	if !ok {
		t.Fatalf("schema has no property %q", name)
	}
	return p
}

func equalAny(v any, want []string) bool {
	list, ok := v.([]any)
	if !ok || len(list) != len(want) {
		return false
	}
	for i := range list {
		if list[i] != want[i] {
			return false
		}
	}
	return true
}
