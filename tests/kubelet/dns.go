//go:build linux

package kubelet

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Limits of kubelet's DNS configurer.
const (
	maxNameservers = 3
	maxSearches    = 32
)

// resolvConf is the content of a resolv.conf.
type resolvConf struct {
	Nameservers []string
	Searches    []string
	Options     []string // "name" or "name:value"
}

// parseResolvConf reads the parts of a resolv.conf that kubelet honours.
func parseResolvConf(data []byte) resolvConf {
	var rc resolvConf
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			rc.Nameservers = append(rc.Nameservers, f[1])
		case "search", "domain":
			// The last search or domain line wins, as in glibc.
			rc.Searches = append([]string{}, f[1:]...)
		case "options":
			rc.Options = append(rc.Options, f[1:]...)
		}
	}
	return rc
}

// String renders rc the way containerd writes a pod's resolv.conf.
func (rc resolvConf) String() string {
	var b strings.Builder
	if len(rc.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(rc.Searches, " "))
	}
	for _, ns := range rc.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(rc.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(rc.Options, " "))
	}
	return b.String()
}

// effectiveDNSPolicy applies kubelet's rules: ClusterFirst is Default for
// hostNetwork pods (ClusterFirstWithHostNet is ClusterFirst for them), and
// ClusterFirst without a cluster DNS IP falls back to Default.
func effectiveDNSPolicy(pod *corev1.Pod, clusterDNS string) corev1.DNSPolicy {
	p := pod.Spec.DNSPolicy
	switch p {
	case "", corev1.DNSClusterFirst:
		p = corev1.DNSClusterFirst
		if pod.Spec.HostNetwork {
			p = corev1.DNSDefault
		}
	case corev1.DNSClusterFirstWithHostNet:
		p = corev1.DNSClusterFirst
	}
	if p == corev1.DNSClusterFirst && clusterDNS == "" {
		p = corev1.DNSDefault
	}
	return p
}

// podResolvConf computes a pod's resolv.conf from its DNS policy and
// dnsConfig; host is the node's own resolv.conf (for policy Default).
func podResolvConf(pod *corev1.Pod, clusterDNS, clusterDomain string, host resolvConf) resolvConf {
	var rc resolvConf
	switch effectiveDNSPolicy(pod, clusterDNS) {
	case corev1.DNSClusterFirst:
		rc.Nameservers = []string{clusterDNS}
		rc.Searches = []string{
			pod.Namespace + ".svc." + clusterDomain,
			"svc." + clusterDomain,
			clusterDomain,
		}
		rc.Options = []string{"ndots:5"}
	case corev1.DNSDefault:
		rc = resolvConf{
			Nameservers: slices.Clone(host.Nameservers),
			Searches:    slices.Clone(host.Searches),
			Options:     slices.Clone(host.Options),
		}
	case corev1.DNSNone:
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		rc.Nameservers = appendUnique(rc.Nameservers, dc.Nameservers...)
		rc.Searches = appendUnique(rc.Searches, dc.Searches...)
		rc.Options = mergeDNSOptions(rc.Options, dc.Options)
	}
	if len(rc.Nameservers) > maxNameservers {
		rc.Nameservers = rc.Nameservers[:maxNameservers]
	}
	if len(rc.Searches) > maxSearches {
		rc.Searches = rc.Searches[:maxSearches]
	}
	return rc
}

func appendUnique(list []string, more ...string) []string {
	for _, s := range more {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

// mergeDNSOptions is kubelet's mergeDNSOptions: options of dnsConfig override
// existing ones with the same name, new ones are appended.
func mergeDNSOptions(existing []string, extra []corev1.PodDNSConfigOption) []string {
	name := func(o string) string { n, _, _ := strings.Cut(o, ":"); return n }
	out := slices.Clone(existing)
	for _, o := range extra {
		s := o.Name
		if o.Value != nil {
			s += ":" + *o.Value
		}
		if i := slices.IndexFunc(out, func(e string) bool { return name(e) == o.Name }); i >= 0 {
			out[i] = s
		} else {
			out = append(out, s)
		}
	}
	return out
}

// podHostname returns a pod's hostname and its FQDN (empty without a
// subdomain), as kubelet's GeneratePodHostNameAndDomain.
func podHostname(pod *corev1.Pod, clusterDomain string) (hostname, fqdn string) {
	hostname = pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	if len(hostname) > 63 {
		hostname = strings.TrimRight(hostname[:63], "-.")
	}
	if pod.Spec.Subdomain != "" {
		fqdn = fmt.Sprintf("%s.%s.%s.svc.%s", hostname, pod.Spec.Subdomain, pod.Namespace, clusterDomain)
	}
	return hostname, fqdn
}

// podHostsFile renders kubelet's managed /etc/hosts for a pod.
func podHostsFile(pod *corev1.Pod, podIPs []string, clusterDomain string) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	hostname, fqdn := podHostname(pod, clusterDomain)
	for _, ip := range podIPs {
		if fqdn != "" {
			fmt.Fprintf(&b, "%s\t%s\t%s\n", ip, fqdn, hostname)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, ha := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
		}
	}
	return b.String()
}
