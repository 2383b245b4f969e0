//go:build linux

package kubelet

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestPodResolvConf(t *testing.T) {
	host := parseResolvConf([]byte("# host\nnameserver 10.255.255.53\nsearch corp.example\noptions edns0 ndots:1\n"))
	pod := func(policy corev1.DNSPolicy, hostNet bool, dc *corev1.PodDNSConfig) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"},
			Spec:       corev1.PodSpec{DNSPolicy: policy, HostNetwork: hostNet, DNSConfig: dc},
		}
	}
	clusterFirst := "search app.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
	hostConf := "search corp.example\nnameserver 10.255.255.53\noptions edns0 ndots:1\n"
	tests := map[string]struct {
		pod        *corev1.Pod
		clusterDNS string
		want       string
	}{
		"default policy is cluster first": {pod: pod("", false, nil), clusterDNS: "10.96.0.10", want: clusterFirst},
		"cluster first":                   {pod: pod(corev1.DNSClusterFirst, false, nil), clusterDNS: "10.96.0.10", want: clusterFirst},
		"host network uses host":          {pod: pod(corev1.DNSClusterFirst, true, nil), clusterDNS: "10.96.0.10", want: hostConf},
		"host network with host net policy": {
			pod: pod(corev1.DNSClusterFirstWithHostNet, true, nil), clusterDNS: "10.96.0.10", want: clusterFirst},
		"default":                   {pod: pod(corev1.DNSDefault, false, nil), clusterDNS: "10.96.0.10", want: hostConf},
		"no cluster dns falls back": {pod: pod(corev1.DNSClusterFirst, false, nil), want: hostConf},
		"none with config": {
			pod: pod(corev1.DNSNone, false, &corev1.PodDNSConfig{
				Nameservers: []string{"1.1.1.1"}, Searches: []string{"a.example"},
				Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}, {Name: "rotate"}},
			}),
			clusterDNS: "10.96.0.10",
			want:       "search a.example\nnameserver 1.1.1.1\noptions ndots:2 rotate\n",
		},
		"merge config": {
			pod: pod(corev1.DNSClusterFirst, false, &corev1.PodDNSConfig{
				Nameservers: []string{"10.96.0.10", "1.1.1.1"}, Searches: []string{"extra.example", "svc.cluster.local"},
				Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("1")}, {Name: "single-request"}},
			}),
			clusterDNS: "10.96.0.10",
			want: "search app.svc.cluster.local svc.cluster.local cluster.local extra.example\n" +
				"nameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:1 single-request\n",
		},
		"at most three nameservers": {
			pod:  pod(corev1.DNSNone, false, &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"}}),
			want: "nameserver 1.1.1.1\nnameserver 2.2.2.2\nnameserver 3.3.3.3\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := podResolvConf(tt.pod, tt.clusterDNS, "cluster.local", host).String()
			if got != tt.want {
				t.Errorf("podResolvConf() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestPodHostsFile(t *testing.T) {
	tests := map[string]struct {
		spec corev1.PodSpec
		want []string
		not  []string
	}{
		"plain": {want: []string{"127.0.0.1\tlocalhost\n", "10.0.0.5\tweb-0\n"}},
		"hostname and subdomain": {
			spec: corev1.PodSpec{Hostname: "db", Subdomain: "dbs"},
			want: []string{"10.0.0.5\tdb.dbs.app.svc.cluster.local\tdb\n"},
			not:  []string{"web-0"},
		},
		"host aliases": {
			spec: corev1.PodSpec{HostAliases: []corev1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"a", "b"}}}},
			want: []string{"# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web-0"}, Spec: tt.spec}
			got := podHostsFile(p, []string{"10.0.0.5"}, "cluster.local")
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("podHostsFile() = %q, want it to contain %q", got, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Errorf("podHostsFile() = %q, want no %q", got, n)
				}
			}
		})
	}
}
