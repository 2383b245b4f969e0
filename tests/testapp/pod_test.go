package testapp

import (
	"errors"
	"testing"
)

func TestPodInfoFrom(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		hostname string
		hostErr  error
		want     PodInfo
	}{
		{
			name:     "downward API",
			env:      map[string]string{"POD_NAME": "web-0", "POD_NAMESPACE": "shop", "NODE_NAME": "node-a", "POD_IP": "10.0.0.7"},
			hostname: "ignored",
			want:     PodInfo{Name: "web-0", Namespace: "shop", Node: "node-a", IP: "10.0.0.7"},
		},
		{
			name:     "hostname fallback",
			env:      map[string]string{"POD_NAMESPACE": "shop"},
			hostname: "web-1",
			want:     PodInfo{Name: "web-1", Namespace: "shop"},
		},
		{
			name:    "no name at all",
			hostErr: errors.New("no hostname"),
			want:    PodInfo{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := podInfoFrom(
				func(k string) string { return tt.env[k] },
				func() (string, error) { return tt.hostname, tt.hostErr },
			)
			if got != tt.want {
				t.Errorf("podInfoFrom() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
