package internal

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/weftmesh/weft/"

// TestImportBoundaries: components never import each other, nothing outside
// tests/ imports the test harness, and internal/ and api/ import no
// component (ARCHITECTURE.md §2).
func TestImportBoundaries(t *testing.T) {
	components := []string{"daemon", "ztunnel", "l7proxy", "operator"}
	filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.Contains(path, "/.cache/") || strings.HasPrefix(path, "../hack/") {
			return nil
		}
		rel := strings.TrimPrefix(filepath.ToSlash(path), "../")
		top, _, _ := strings.Cut(rel, "/")
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			t.Errorf("parse %s: %v", path, err)
			return nil
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			dep, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			depTop, _, _ := strings.Cut(dep, "/")
			switch {
			case depTop == "tests" && top != "tests":
				t.Errorf("%s imports the test harness %s", rel, p)
			case contains(components, depTop) && depTop != top && top != "cmd" && top != "tests":
				t.Errorf("%s (component %s) imports component %s", rel, top, p)
			case contains(components, depTop) && (top == "internal" || top == "api" || top == "bpf"):
				t.Errorf("%s (shared layer %s) imports component %s", rel, top, p)
			}
		}
		return nil
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
