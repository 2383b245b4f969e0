//go:build linux

package kubelet

import (
	"context"
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

// fakeObjects is an objectSource over fixed maps keyed "namespace/name".
type fakeObjects struct {
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func (f fakeObjects) ConfigMap(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if cm, ok := f.configMaps[ns+"/"+name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (f fakeObjects) Secret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func svc(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: ip, Ports: ports},
	}
}

func TestServiceEnv(t *testing.T) {
	kubernetes := svc("default", "kubernetes", "10.96.0.1", corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP})
	services := []*corev1.Service{
		kubernetes,
		svc("app", "web-front", "10.96.0.20",
			corev1.ServicePort{Name: "http", Port: 80},
			corev1.ServicePort{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP}),
		svc("app", "headless", corev1.ClusterIPNone, corev1.ServicePort{Port: 80}),
		svc("app", "external", ""),
		svc("other", "elsewhere", "10.96.0.30", corev1.ServicePort{Port: 81}),
	}
	kubeVars := map[string]string{
		"KUBERNETES_SERVICE_HOST":       "10.96.0.1",
		"KUBERNETES_SERVICE_PORT":       "443",
		"KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT":               "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP":       "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp",
		"KUBERNETES_PORT_443_TCP_PORT":  "443",
		"KUBERNETES_PORT_443_TCP_ADDR":  "10.96.0.1",
	}
	webVars := map[string]string{
		"WEB_FRONT_SERVICE_HOST":         "10.96.0.20",
		"WEB_FRONT_SERVICE_PORT":         "80",
		"WEB_FRONT_SERVICE_PORT_HTTP":    "80",
		"WEB_FRONT_SERVICE_PORT_DNS_UDP": "53",
		"WEB_FRONT_PORT":                 "tcp://10.96.0.20:80",
		"WEB_FRONT_PORT_80_TCP":          "tcp://10.96.0.20:80",
		"WEB_FRONT_PORT_80_TCP_PROTO":    "tcp",
		"WEB_FRONT_PORT_80_TCP_PORT":     "80",
		"WEB_FRONT_PORT_80_TCP_ADDR":     "10.96.0.20",
		"WEB_FRONT_PORT_53_UDP":          "udp://10.96.0.20:53",
		"WEB_FRONT_PORT_53_UDP_PROTO":    "udp",
		"WEB_FRONT_PORT_53_UDP_PORT":     "53",
		"WEB_FRONT_PORT_53_UDP_ADDR":     "10.96.0.20",
	}
	both := maps.Clone(kubeVars)
	maps.Copy(both, webVars)
	tests := map[string]struct {
		ns    string
		links bool
		want  map[string]string
	}{
		"links on":               {ns: "app", links: true, want: both},
		"links off keeps master": {ns: "app", links: false, want: kubeVars},
		"default namespace":      {ns: "default", links: true, want: kubeVars},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := serviceEnv(tt.ns, tt.links, services)
			if !maps.Equal(got, tt.want) {
				t.Errorf("serviceEnv(%q, %v) = %v, want %v", tt.ns, tt.links, got, tt.want)
			}
		})
	}
}

func TestContainerEnv(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "app", Name: "web-0", UID: "1234",
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"note": "hi"},
		},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "web"},
	}
	objects := fakeObjects{
		configMaps: map[string]*corev1.ConfigMap{
			"app/cfg": {Data: map[string]string{"MODE": "fast", "LEVEL": "3"}},
		},
		secrets: map[string]*corev1.Secret{
			"app/sec": {Data: map[string][]byte{"TOKEN": []byte("s3cret")}},
		},
	}
	rt := podRuntime{PodIPs: []string{"10.0.0.5", "fd00::5"}, HostIPs: []string{"192.168.1.2"}, Allocatable: nodeCapacity()}
	svcEnv := map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "MODE": "from-service"}
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	tests := map[string]struct {
		ctr     corev1.Container
		want    map[string]string
		wantErr bool
	}{
		"envFrom with prefix and service vars": {
			ctr: corev1.Container{EnvFrom: []corev1.EnvFromSource{
				{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
				{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}}},
			}},
			want: map[string]string{"CFG_MODE": "fast", "CFG_LEVEL": "3", "TOKEN": "s3cret",
				"KUBERNETES_SERVICE_HOST": "10.96.0.1", "MODE": "from-service"},
		},
		"env overrides envFrom and service": {
			ctr: corev1.Container{
				EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				Env:     []corev1.EnvVar{{Name: "MODE", Value: "slow"}},
			},
			want: map[string]string{"MODE": "slow", "LEVEL": "3", "KUBERNETES_SERVICE_HOST": "10.96.0.1"},
		},
		"expansion sees earlier vars only": {
			ctr: corev1.Container{Env: []corev1.EnvVar{
				{Name: "A", Value: "a"},
				{Name: "B", Value: "$(A)-$(C)-$$(A)-$(KUBERNETES_SERVICE_HOST)"},
				{Name: "C", Value: "c"},
			}},
			want: map[string]string{"A": "a", "B": "a-$(C)-$(A)-10.96.0.1", "C": "c",
				"KUBERNETES_SERVICE_HOST": "10.96.0.1", "MODE": "from-service"},
		},
		"downward api": {
			ctr: corev1.Container{Env: []corev1.EnvVar{
				{Name: "NAME", ValueFrom: field("metadata.name")},
				{Name: "NS", ValueFrom: field("metadata.namespace")},
				{Name: "UID", ValueFrom: field("metadata.uid")},
				{Name: "NODE", ValueFrom: field("spec.nodeName")},
				{Name: "SA", ValueFrom: field("spec.serviceAccountName")},
				{Name: "IP", ValueFrom: field("status.podIP")},
				{Name: "IPS", ValueFrom: field("status.podIPs")},
				{Name: "HOST", ValueFrom: field("status.hostIP")},
				{Name: "HOSTS", ValueFrom: field("status.hostIPs")},
				{Name: "APP", ValueFrom: field("metadata.labels['app']")},
				{Name: "NOTE", ValueFrom: field("metadata.annotations['note']")},
				{Name: "LABELS", ValueFrom: field("metadata.labels")},
				{Name: "REF", Value: "$(NAME).$(NS)"},
			}},
			want: map[string]string{"NAME": "web-0", "NS": "app", "UID": "1234", "NODE": "node-1", "SA": "web",
				"IP": "10.0.0.5", "IPS": "10.0.0.5,fd00::5", "HOST": "192.168.1.2", "HOSTS": "192.168.1.2",
				"APP": "web", "NOTE": "hi", "LABELS": "app=\"web\"\ntier=\"front\"", "REF": "web-0.app",
				"KUBERNETES_SERVICE_HOST": "10.96.0.1", "MODE": "from-service"},
		},
		"key refs and optional": {
			ctr: corev1.Container{Env: []corev1.EnvVar{
				{Name: "LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "LEVEL"}}},
				{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "TOKEN"}}},
				{Name: "MISSING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "x", Optional: ptr.To(true)}}},
				{Name: "MISSINGKEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "x", Optional: ptr.To(true)}}},
			}},
			want: map[string]string{"LEVEL": "3", "TOKEN": "s3cret", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "MODE": "from-service"},
		},
		"resource field": {
			ctr: corev1.Container{
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
				},
				Env: []corev1.EnvVar{
					{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
						Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
					{Name: "CPU_REQ_M", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
						Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
					{Name: "CPU_REQ", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu"}}},
					{Name: "CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
				},
			},
			want: map[string]string{"MEM_MI": "64", "CPU_REQ_M": "250", "CPU_REQ": "1", "CPU_LIMIT": "4",
				"KUBERNETES_SERVICE_HOST": "10.96.0.1", "MODE": "from-service"},
		},
		"missing configmap": {
			ctr: corev1.Container{EnvFrom: []corev1.EnvFromSource{
				{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}},
			}},
			wantErr: true,
		},
		"missing key": {
			ctr: corev1.Container{Env: []corev1.EnvVar{
				{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "x"}}},
			}},
			wantErr: true,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := containerEnv(context.Background(), objects, pod, &tt.ctr, rt, svcEnv)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("containerEnv() = %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("containerEnv() error = %v", err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("containerEnv() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFinalEnv(t *testing.T) {
	got := finalEnv(map[string]string{"PATH": "/x", "B": "b"}, "web-0")
	want := []string{"B=b", "HOME=/root", "HOSTNAME=web-0", "PATH=/x"}
	if len(got) != len(want) {
		t.Fatalf("finalEnv() = %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("finalEnv() = %q, want %q", got, want)
		}
	}
}
