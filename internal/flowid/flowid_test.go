package flowid

import (
	"slices"
	"testing"
)

func TestIdentity(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want uint32
	}{
		{name: "empty is unknown", id: "", want: 0},
		// FNV-1a 32 of "a" is 0xe40c292c; bit 24 added.
		{name: "a", id: "a", want: 0xe50c292c},
		// FNV-1a 32 of the ID is 0x529a6550 (computed independently, in Python).
		{name: "spiffe", id: "spiffe://cluster.local/ns/shop/sa/web", want: 0x539a6550},
		// FNV-1a 32 of "b" is 0xe70c2de5, bit 24 already set: unchanged.
		{name: "bit already set", id: "b", want: 0xe70c2de5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Identity(tt.id); got != tt.want {
				t.Errorf("Identity(%q) = %#x, want %#x", tt.id, got, tt.want)
			}
		})
	}
}

// fnv1a is the FNV-1a 32 reference, written out from its definition.
func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

func TestIdentityProperties(t *testing.T) {
	ids := []string{
		"spiffe://cluster.local/ns/shop/sa/web",
		"spiffe://cluster.local/ns/shop/sa/db",
		"spiffe://cluster.local/ns/other/sa/web",
		"x",
	}
	seen := map[uint32]string{}
	for _, id := range ids {
		got := Identity(id)
		if want := fnv1a(id) | IdentityBit; got != want {
			t.Errorf("Identity(%q) = %#x, want %#x", id, got, want)
		}
		if got&IdentityBit == 0 {
			t.Errorf("Identity(%q) = %#x, want bit %#x set", id, got, IdentityBit)
		}
		if got < 1<<24 {
			t.Errorf("Identity(%q) = %#x falls in Cilium's cluster-scoped range", id, got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("Identity(%q) = Identity(%q) = %#x", id, other, got)
		}
		seen[got] = id
		if again := Identity(id); again != got {
			t.Errorf("Identity(%q) not stable: %#x then %#x", id, got, again)
		}
	}
}

func TestPrincipalLabels(t *testing.T) {
	const id = "spiffe://cluster.local/ns/shop/sa/web"
	if got, want := PrincipalLabel(id), "weft:principal=spiffe://cluster.local/ns/shop/sa/web"; got != want {
		t.Errorf("PrincipalLabel(%q) = %q, want %q", id, got, want)
	}
	if got := PrincipalLabel(""); got != "" {
		t.Errorf("PrincipalLabel(\"\") = %q, want \"\"", got)
	}

	in := []string{"k8s:app=web", "weft:principal=spiffe://old", "k8s:io.kubernetes.pod.namespace=shop"}
	orig := slices.Clone(in)
	got := WithPrincipal(in, id)
	want := []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop", PrincipalLabel(id)}
	if !slices.Equal(got, want) {
		t.Errorf("WithPrincipal(%q, %q) = %q, want %q", in, id, got, want)
	}
	if !slices.Equal(in, orig) {
		t.Errorf("WithPrincipal modified its input: %q, was %q", in, orig)
	}
	if p, ok := Principal(got); !ok || p != id {
		t.Errorf("Principal(%q) = %q, %v, want %q, true", got, p, ok, id)
	}
	if p, ok := Principal([]string{"k8s:app=web"}); ok {
		t.Errorf("Principal without principal label = %q, true, want false", p)
	}
	if got := WithPrincipal(in, ""); slices.ContainsFunc(got, func(l string) bool { return l == "weft:principal=spiffe://old" }) {
		t.Errorf("WithPrincipal(%q, \"\") = %q, want the principal label removed", in, got)
	}
}
