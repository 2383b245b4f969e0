//go:build linux

package kubelet

import "testing"

// The cases follow Kubernetes' third_party/forked/golang/expansion tests.
func TestExpand(t *testing.T) {
	vars := map[string]string{
		"VAR_A":     "A",
		"VAR_B":     "B",
		"VAR_C":     "C",
		"VAR_REF":   "$(VAR_A)",
		"VAR_EMPTY": "",
	}
	tests := map[string]struct{ in, want string }{
		"whole string":             {"$(VAR_A)", "A"},
		"repeat":                   {"$(VAR_A)-$(VAR_A)", "A-A"},
		"beginning":                {"$(VAR_A)-1", "A-1"},
		"middle":                   {"___$(VAR_B)___", "___B___"},
		"end":                      {"___$(VAR_C)", "___C"},
		"compound":                 {"$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"},
		"escape":                   {"$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"},
		"compound escape":          {"$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"},
		"mixed":                    {"f000-$$VAR_A", "f000-$VAR_A"},
		"backslash no escape":      {`foo\$(VAR_C)bar`, `foo\Cbar`},
		"backslash escape":         {`foo\\$(VAR_C)bar`, `foo\\Cbar`},
		"lots of backslashes":      {`foo\\\\\$(VAR_C)bar`, `foo\\\\\Cbar`},
		"nested var ref":           {"$(VAR_REF)", "$(VAR_A)"},
		"empty var":                {"foo$(VAR_EMPTY)bar", "foobar"},
		"unterminated":             {"$(VAR_A", "$(VAR_A"},
		"unterminated then var":    {"$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"},
		"undefined":                {"$(VAR_NONE)", "$(VAR_NONE)"},
		"dollar then paren in var": {"$($(VAR_A))", "$($(VAR_A))"},
		"empty name":               {"$()", "$()"},
		"trailing dollar":          {"foo$", "foo$"},
		"lone dollar":              {"$", "$"},
		"double dollar":            {"$$", "$"},
		"triple dollar var":        {"$$$(VAR_A)", "$A"},
		"dollar letter":            {"$VAR_A", "$VAR_A"},
		"no vars":                  {"hello world", "hello world"},
		"operator not var":         {"$:", "$:"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := expand(tt.in, lookupIn(vars)); got != tt.want {
				t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLookupInPrecedence(t *testing.T) {
	lookup := lookupIn(map[string]string{"A": "first"}, map[string]string{"A": "second", "B": "b"})
	if got := expand("$(A)$(B)", lookup); got != "firstb" {
		t.Errorf("expand = %q, want %q", got, "firstb")
	}
}
