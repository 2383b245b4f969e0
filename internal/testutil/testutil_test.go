package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	n := NewNames("wxt")
	a, b := n.Unique("ns"), n.Unique("ns")
	if a == b || !strings.HasPrefix(a, fmt.Sprintf("wxt%d-ns", os.Getpid())) {
		t.Errorf("Unique() = %q, %q; want distinct names with this pid", a, b)
	}
	tests := map[string]bool{
		a:                    false, // ours: alive
		"wxt999999999-ns1":   true,  // no such pid
		"other999999999-ns1": false, // another prefix
		"wxtnotapid-ns1":     false,
		"wxt1":               false, // no separator
	}
	for name, want := range tests {
		if got := n.Stale(name); got != want {
			t.Errorf("Stale(%q) = %v, want %v", name, got, want)
		}
	}
}
