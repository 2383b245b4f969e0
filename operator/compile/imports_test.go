package compile

import (
	"go/build"
	"strings"
	"testing"
)

// TestImports keeps the package a pure function of API types: client-go,
// other components and the rest of the operator stay out.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatalf("read package: %v", err)
	}
	allowed := []string{
		"google.golang.org/protobuf/",
		"k8s.io/api/",
		"k8s.io/apimachinery/",
		"github.com/weftmesh/weft/api/",
		"github.com/weftmesh/weft/internal/spiffe",
	}
	for _, imp := range pkg.Imports {
		if !strings.Contains(strings.Split(imp, "/")[0], ".") {
			continue // the standard library
		}
		ok := false
		for _, a := range allowed {
			ok = ok || strings.HasPrefix(imp, a)
		}
		if !ok {
			t.Errorf("the package imports %s; it may import only the standard library and %v", imp, allowed)
		}
	}
}
