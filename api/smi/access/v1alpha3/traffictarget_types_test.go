package accessv1alpha3

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSourcesSummary(t *testing.T) {
	sa := func(name, ns string) IdentityBindingSubject {
		return IdentityBindingSubject{Kind: KindServiceAccount, Name: name, Namespace: ns}
	}
	many := func(n int) []IdentityBindingSubject {
		var s []IdentityBindingSubject
		for i := range n {
			s = append(s, sa(fmt.Sprintf("sa%d", i), ""))
		}
		return s
	}
	tests := map[string]struct {
		sources []IdentityBindingSubject
		want    string
	}{
		"none":                               {nil, ""},
		"namespace defaults to the target's": {[]IdentityBindingSubject{sa("prometheus", "")}, "shop/prometheus"},
		"explicit namespaces":                {[]IdentityBindingSubject{sa("bookbuyer", "bookbuyer"), sa("prometheus", "monitoring")}, "bookbuyer/bookbuyer,monitoring/prometheus"},
		"four are all listed":                {many(4), "shop/sa0,shop/sa1,shop/sa2,shop/sa3"},
		"more than four are counted":         {many(7), "shop/sa0,shop/sa1,shop/sa2,shop/sa3,+3"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tt := &TrafficTarget{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}, Spec: TrafficTargetSpec{Sources: tc.sources}}
			if got := tt.SourcesSummary(); got != tc.want {
				t.Errorf("SourcesSummary() = %q, want %q", got, tc.want)
			}
		})
	}
}
