package internal

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs: every package in the module has exactly one package doc
// comment ("Package x …", or "Command x …" for a main package).
func TestPackageDocs(t *testing.T) {
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin") {
			return filepath.SkipDir
		}
		// Nested modules (hack/tools/*) are not part of this module.
		if path != root {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir
			}
		}
		checkDir(t, path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkDir(t *testing.T, dir string) {
	t.Helper()
	fset := token.NewFileSet()
	matches, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	var docs []string
	var pkg string
	for _, f := range matches {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Errorf("parse %s: %v", f, err)
			continue
		}
		pkg = file.Name.Name
		if file.Doc != nil {
			docs = append(docs, filepath.Base(f))
			text := file.Doc.Text()
			want := "Package " + pkg + " "
			if pkg == "main" {
				want = "Command "
			}
			if !strings.HasPrefix(text, want) {
				t.Errorf("%s: package doc starts %q, want %q", f, firstLine(text), want)
			}
		}
	}
	if pkg == "" {
		return
	}
	if len(docs) != 1 {
		t.Errorf("package %s in %s has %d package doc comments (%v), want exactly 1", pkg, dir, len(docs), docs)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
