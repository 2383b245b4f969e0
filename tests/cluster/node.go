package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/tests/kubelet"
)

// Image repositories the emulator maps to local binaries. weft's own
// images (ghcr.io/weftmesh/<binary>) map to <repo>/bin/<binary>.
const (
	ImageRegistry = "ghcr.io/weftmesh"
	TestAppImage  = ImageRegistry + "/weft-testapp"
	CoreDNSImage  = "registry.k8s.io/coredns/coredns"
)

// cniConflist is the node's pod network chain: the selected reference plugin
// with host-local IPAM (its data kept under the node's root, never the host's
// /var/lib/cni), then any extra plugins.
func (c *Cluster) cniConflist(i int, root string) ([]byte, error) {
	ipam := map[string]any{
		"type":    "host-local",
		"ranges":  [][]map[string]string{{{"subnet": c.addr.podCIDR(i).String()}}},
		"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
		"dataDir": filepath.Join(root, "var", "lib", "cni", "networks"),
	}
	var main map[string]any
	switch c.cfg.CNI {
	case CNIBridge:
		main = map[string]any{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
			"hairpinMode": true, "ipam": ipam}
	case CNIPTP:
		main = map[string]any{"type": "ptp", "ipMasq": false, "mtu": 1500, "ipam": ipam}
	}
	plugins := []any{main}
	name := c.run.state.Nodes[i]
	for _, raw := range c.cfg.ExtraCNIPlugins {
		r := strings.NewReplacer("$NODE_ROOT", root, "$NODE_NAME", name).Replace(string(raw))
		plugins = append(plugins, json.RawMessage(r))
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "weft-pods",
		"plugins":    plugins,
	}, "", "  ")
}

func (c *Cluster) startNodes(ctx context.Context) error {
	rid := c.run.state.RunID
	cniBin, err := c.tools.cniDir()
	if err != nil {
		return err
	}
	corednsBin, err := c.tools.coredns()
	if err != nil {
		return err
	}
	proxyBin := ""
	if !c.cfg.SkipKubeProxy {
		if proxyBin, err = c.tools.kube("kube-proxy"); err != nil {
			return err
		}
	}
	images := map[string]string{CoreDNSImage: corednsBin}
	bins, err := os.ReadDir(c.bin)
	if err != nil {
		return fmt.Errorf("list harness binaries: %w", err)
	}
	for _, b := range bins {
		images[ImageRegistry+"/"+b.Name()] = filepath.Join(c.bin, b.Name())
	}
	for k, v := range c.cfg.Images {
		images[k] = v
	}
	for i, name := range c.run.state.Nodes {
		root := c.NodeRoot(name)
		confDir := filepath.Join(root, "etc", "cni", "net.d")
		binDir := filepath.Join(root, "opt", "cni", "bin")
		for _, d := range []string{confDir, binDir, filepath.Join(root, "var", "lib", "cni")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("create node %s dir: %w", name, err)
			}
		}
		plugins, err := os.ReadDir(cniBin)
		if err != nil {
			return fmt.Errorf("list cni plugins: %w", err)
		}
		for _, p := range plugins {
			if p.Name() == ".done" {
				continue
			}
			if err := os.Symlink(filepath.Join(cniBin, p.Name()), filepath.Join(binDir, p.Name())); err != nil {
				return fmt.Errorf("install cni plugin %s on %s: %w", p.Name(), name, err)
			}
		}
		for plugin, path := range c.cfg.ExtraCNIBinaries {
			if err := os.Symlink(path, filepath.Join(binDir, plugin)); err != nil {
				return fmt.Errorf("install cni plugin %s on %s: %w", plugin, name, err)
			}
		}
		conf, err := c.cniConflist(i, root)
		if err != nil {
			return fmt.Errorf("encode cni config: %w", err)
		}
		if err := os.WriteFile(filepath.Join(confDir, "10-weft-pods.conflist"), conf, 0o644); err != nil {
			return fmt.Errorf("write cni config: %w", err)
		}
		if err := os.MkdirAll(c.PinRoot(name), 0o700); err != nil {
			return fmt.Errorf("create pin root for %s: %w", name, err)
		}
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			}},
			Spec: corev1.NodeSpec{PodCIDR: c.addr.podCIDR(i).String(), PodCIDRs: []string{c.addr.podCIDR(i).String()}},
		}
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node %s: %w", name, err)
		}
		kcfg := kubelet.Config{
			NodeName:   name,
			NodeIP:     c.addr.node(i).String(),
			Kubeconfig: c.run.path("kubeconfigs", "node-"+name+".yaml"),
			Root:       root,
			CNIConfDir: confDir,
			CNIBinDir:  binDir,
			// What a DaemonSet (weft's install-cni) writes through hostPath
			// is what the node's plugins read.
			CNINodeDirs:   []string{"/etc/cni/net.d", "/opt/cni/bin", "/var/run/weft"},
			CgroupRoot:    filepath.Join(c.cgroup, name),
			NetnsPrefix:   netnsName(rid, name) + "-",
			Images:        images,
			ClusterDNS:    dnsServiceIP,
			ClusterDomain: clusterDomain,
			ShimPath:      filepath.Join(c.bin, "weft-cluster"),
		}
		data, err := json.MarshalIndent(kcfg, "", "  ")
		if err != nil {
			return fmt.Errorf("encode node emulator config: %w", err)
		}
		cfgPath := filepath.Join(root, "kubelet.json")
		if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
			return fmt.Errorf("write node emulator config: %w", err)
		}
		ns := netnsName(rid, name)
		if err := c.spawn("kubelet-"+name, ns, filepath.Join(c.cgroup, name, "kubelet"),
			filepath.Join(c.bin, "weft-cluster"), "node", "--config", cfgPath); err != nil {
			return err
		}
		if proxyBin != "" {
			if err := c.spawn("kube-proxy-"+name, ns, filepath.Join(c.cgroup, name, "kube-proxy"), proxyBin,
				"--kubeconfig="+c.run.path("kubeconfigs", "kube-proxy.yaml"),
				"--hostname-override="+name,
				"--proxy-mode=iptables",
				"--cluster-cidr="+podCIDR,
				"--bind-address="+c.addr.node(i).String(),
				"--metrics-bind-address=127.0.0.1:10249",
				"--healthz-bind-address=127.0.0.1:10256",
				// Conntrack limits are global sysctls; leave the host's alone.
				"--conntrack-max-per-core=0",
				"--conntrack-tcp-timeout-established=0",
				"--conntrack-tcp-timeout-close-wait=0",
			); err != nil {
				return err
			}
		}
	}
	return nil
}
