package splitv1alpha4

import (
	"testing"
)

func TestBackendsSummary(t *testing.T) {
	b := func(service string, weight int32) TrafficSplitBackend {
		return TrafficSplitBackend{Service: service, Weight: weight}
	}
	tests := map[string]struct {
		backends []TrafficSplitBackend
		want     string
	}{
		"none":                       {nil, ""},
		"canary":                     {[]TrafficSplitBackend{b("website-v1", 90), b("website-v2", 10)}, "website-v1:90,website-v2:10"},
		"weight zero is shown":       {[]TrafficSplitBackend{b("foobar-v1", 100), b("foobar-v2", 0)}, "foobar-v1:100,foobar-v2:0"},
		"more than four are counted": {[]TrafficSplitBackend{b("a", 1), b("b", 2), b("c", 3), b("d", 4), b("e", 5), b("f", 6)}, "a:1,b:2,c:3,d:4,+2"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ts := &TrafficSplit{Spec: TrafficSplitSpec{Backends: tc.backends}}
			if got := ts.BackendsSummary(); got != tc.want {
				t.Errorf("BackendsSummary() = %q, want %q", got, tc.want)
			}
		})
	}
}
