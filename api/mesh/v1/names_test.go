package meshv1_test

import (
	"testing"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

func TestNameMatchesBody(t *testing.T) {
	wl := &meshv1.Resource_Workload{Workload: &meshv1.Workload{}}
	tests := []struct {
		name string
		r    *meshv1.Resource
		want bool
	}{
		{"workload", &meshv1.Resource{Name: meshv1.WorkloadName("6c0f"), Body: wl}, true},
		{"service", &meshv1.Resource{Name: meshv1.ServiceName("shop", "echo"), Body: &meshv1.Resource_Service{Service: &meshv1.Service{}}}, true},
		{"policy", &meshv1.Resource{Name: meshv1.PolicyName("shop", "echo"), Body: &meshv1.Resource_Policy{Policy: &meshv1.Policy{}}}, true},
		{"settings", &meshv1.Resource{Name: meshv1.SettingsName, Body: &meshv1.Resource_Settings{Settings: &meshv1.MeshSettings{}}}, true},
		{"workload named as a service", &meshv1.Resource{Name: meshv1.ServiceName("shop", "echo"), Body: wl}, false},
		{"prefix only", &meshv1.Resource{Name: meshv1.WorkloadPrefix, Body: wl}, false},
		{"settings under another name", &meshv1.Resource{Name: "settings/x", Body: &meshv1.Resource_Settings{Settings: &meshv1.MeshSettings{}}}, false},
		{"no body", &meshv1.Resource{Name: meshv1.WorkloadName("6c0f")}, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := meshv1.NameMatchesBody(tt.r); got != tt.want {
				t.Errorf("NameMatchesBody(%v) = %v, want %v", tt.r, got, tt.want)
			}
		})
	}
}
