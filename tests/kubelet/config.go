package kubelet

import "time"

// Config is everything the node emulator needs. The cluster harness writes it as
// JSON and starts `weft-cluster node --config FILE` inside the node's network
// namespace; the emulator never leaves that namespace except through the shim.
type Config struct {
	// NodeName is the Node object this emulator plays kubelet for. The harness
	// creates the Node (with spec.podCIDR) before the emulator starts.
	NodeName string `json:"nodeName"`
	// NodeIP is the node's address on the underlay (InternalIP, hostIP).
	NodeIP string `json:"nodeIP"`
	// Kubeconfig holds the node's own credentials (user system:node:<name>, group
	// system:nodes), so the API server's Node authorizer and NodeRestriction apply.
	Kubeconfig string `json:"kubeconfig"`
	// Root is the node's host-path root: hostPath volumes resolve under it, and
	// pod state (volumes, logs) lives in Root/var/lib/kubelet.
	Root string `json:"root"`
	// CNIConfDir and CNIBinDir are the node's CNI directories (under Root). The
	// emulator uses the first *.conflist in CNIConfDir, in lexical order, as
	// kubelet/containerd do; CNIBinDir holds the plugins.
	CNIConfDir string `json:"cniConfDir"`
	CNIBinDir  string `json:"cniBinDir"`
	// CNINodeDirs are host paths (e.g. /etc/cni/net.d, /opt/cni/bin,
	// /var/run/weft) that CNI plugins see as Root+path, as a real node's
	// plugins see the files its DaemonSets put there through hostPath
	// volumes. Plugins run through the shim in a mount namespace of their
	// own when it is set.
	CNINodeDirs []string `json:"cniNodeDirs,omitempty"`
	// CgroupRoot is an absolute directory in the cgroup v2 hierarchy owned by this
	// node. Container processes run in CgroupRoot/kubepods/pod<uid>/<container>.
	CgroupRoot string `json:"cgroupRoot"`
	// NetnsPrefix names pod network namespaces: /run/netns/<NetnsPrefix><first 8 of uid>.
	NetnsPrefix string `json:"netnsPrefix"`
	// Images maps an image repository (without tag or digest, e.g.
	// "ghcr.io/weftmesh/weft-agent") to the local binary that is that image's
	// entrypoint.
	Images map[string]string `json:"images"`
	// ClusterDNS is the DNS Service IP written into pods' resolv.conf.
	ClusterDNS string `json:"clusterDNS"`
	// ClusterDomain is the cluster's DNS domain, "cluster.local".
	ClusterDomain string `json:"clusterDomain"`
	// ShimPath is the binary that starts a container: it is invoked as
	// `ShimPath shim ...` and calls kubelet.Shim.
	ShimPath string `json:"shimPath"`
	// HeartbeatInterval is how often the node's Lease is renewed (default 10s).
	HeartbeatInterval time.Duration `json:"heartbeatInterval,omitempty"`
}
