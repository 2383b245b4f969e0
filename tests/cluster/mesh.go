package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshpki "github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/ztunnel/state"
)

// MeshLabel enrolls a namespace in the mesh.
const MeshLabel = "weft.io/mesh"

// MeshConfigPath is where a node's weft-ztunnel reads its mesh state (the
// chart's ztunnel.configDir/configFileName), relative to the node root.
const MeshConfigPath = "var/lib/weft/ztunnel/config.json"

// MeshOptions are the parts of the mesh state a test decides: what the
// operator will compile from SMI resources once it exists.
type MeshOptions struct {
	// PolicyMode is state.ModePermissive (default) or state.ModeStrict.
	PolicyMode string
	// Policies are compiled TrafficTargets.
	Policies []state.Policy
	// TrustBundle holds extra PEM roots (a CA rotation in progress).
	TrustBundle string
}

var meshVersion atomic.Uint64

// MeshSnapshot compiles the node proxies' mesh state from the API server,
// as the operator will: every pod with an IP is a workload (HBONE when its
// namespace is labelled weft.io/mesh=enabled, TCP otherwise), every Service
// with a ClusterIP a service with its EndpointSlices' endpoints.
func (c *Cluster) MeshSnapshot(ctx context.Context, opts MeshOptions) (*state.Snapshot, error) {
	nss, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	meshed := make(map[string]bool)
	for _, ns := range nss.Items {
		if ns.Labels[MeshLabel] == "enabled" {
			meshed[ns.Name] = true
		}
	}
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	snap := &state.Snapshot{
		Version:     strconv.FormatUint(meshVersion.Add(1), 10) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		PolicyMode:  opts.PolicyMode,
		Policies:    opts.Policies,
		TrustBundle: opts.TrustBundle,
	}
	owners := make(map[string]string) // namespace/replicaset → deployment
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.HostNetwork || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		var ips []netip.Addr
		for _, pip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(pip.IP); err == nil {
				ips = append(ips, a)
			}
		}
		w := state.Workload{
			UID:            string(p.UID),
			Namespace:      p.Namespace,
			Name:           p.Name,
			ServiceAccount: p.Spec.ServiceAccountName,
			Node:           p.Spec.NodeName,
			IPs:            ips,
			Protocol:       state.ProtocolTCP,
			WorkloadName:   c.workloadName(ctx, p, owners),
			App:            firstLabel(p.Labels, "app", "app.kubernetes.io/name"),
			Version:        firstLabel(p.Labels, "version", "app.kubernetes.io/version"),
		}
		if w.ServiceAccount == "" {
			w.ServiceAccount = "default"
		}
		if meshed[p.Namespace] {
			w.Protocol = state.ProtocolHBONE
		}
		snap.Workloads = append(snap.Workloads, w)
	}
	svcs, err := c.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	slices_, err := c.Client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list endpointslices: %w", err)
	}
	for _, svc := range svcs.Items {
		if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		s := state.Service{
			Namespace: svc.Namespace,
			Name:      svc.Name,
			Hostname:  svc.Name + "." + svc.Namespace + ".svc.cluster.local",
		}
		for _, ip := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.VIPs = append(s.VIPs, a)
			}
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			port := state.ServicePort{Name: sp.Name, Port: uint16(sp.Port)}
			if sp.TargetPort.IntVal != 0 {
				port.TargetPort = uint16(sp.TargetPort.IntVal)
			} else if sp.TargetPort.StrVal == "" {
				port.TargetPort = uint16(sp.Port)
			}
			s.Ports = append(s.Ports, port)
		}
		for _, es := range slices_.Items {
			if es.Namespace != svc.Namespace || es.Labels[discoveryv1.LabelServiceName] != svc.Name {
				continue
			}
			s.Endpoints = append(s.Endpoints, endpointsOf(&es, svc.Spec.Ports)...)
		}
		snap.Services = append(snap.Services, s)
	}
	return snap, nil
}

func endpointsOf(es *discoveryv1.EndpointSlice, svcPorts []corev1.ServicePort) []state.Endpoint {
	var out []state.Endpoint
	for _, ep := range es.Endpoints {
		ports := make(map[uint16]uint16)
		for _, sp := range svcPorts {
			for _, p := range es.Ports {
				if p.Port != nil && ptrStr(p.Name) == sp.Name {
					ports[uint16(sp.Port)] = uint16(*p.Port)
				}
			}
		}
		ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
		for _, a := range ep.Addresses {
			addr, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			e := state.Endpoint{Address: addr, Ready: ready, Ports: ports}
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				e.WorkloadUID = string(ep.TargetRef.UID)
			}
			out = append(out, e)
		}
	}
	return out
}

func ptrStr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func firstLabel(labels map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

// workloadName is Istio's workload name of a pod: its Deployment, else its
// controller, else the pod itself.
func (c *Cluster) workloadName(ctx context.Context, p *corev1.Pod, owners map[string]string) string {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return p.Name
	}
	if ref.Kind != "ReplicaSet" {
		return ref.Name
	}
	key := p.Namespace + "/" + ref.Name
	if name, ok := owners[key]; ok {
		return name
	}
	name := ref.Name
	rs, err := c.Client.AppsV1().ReplicaSets(p.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err == nil {
		if d := metav1.GetControllerOf(rs); d != nil && d.Kind == "Deployment" {
			name = d.Name
		}
	}
	owners[key] = name
	return name
}

// WriteMeshConfig writes snap to every node's ztunnel config file, each
// atomically (a reader never sees half a file).
func (c *Cluster) WriteMeshConfig(snap *state.Snapshot) error {
	b, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return fmt.Errorf("encode mesh config: %w", err)
	}
	for _, n := range c.Nodes() {
		path := filepath.Join(c.NodeRoot(n), MeshConfigPath)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("write mesh config of %s: %w", n, err)
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("write mesh config of %s: %w", n, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write mesh config of %s: %w", n, err)
		}
	}
	return nil
}

// SyncMeshConfig compiles the mesh state (MeshSnapshot), writes it to
// every node (WriteMeshConfig) and, when weft-ztunnel is installed, waits
// until every node's ztunnel serves it: call it after pods, services, labels
// or policies change.
func (c *Cluster) SyncMeshConfig(ctx context.Context, opts MeshOptions) (*state.Snapshot, error) {
	snap, err := c.MeshSnapshot(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := c.WriteMeshConfig(snap); err != nil {
		return nil, err
	}
	_, err = c.Client.AppsV1().DaemonSets(WeftNamespace).Get(ctx, "weft-ztunnel", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return snap, nil
	case err != nil:
		return nil, fmt.Errorf("look up weft-ztunnel: %w", err)
	}
	return snap, c.WaitMeshConfig(ctx, snap.Version)
}

// WaitMeshConfig waits until every node's weft-ztunnel reports (in its
// weft_ztunnel_config_info metric) that it serves mesh config version v.
func (c *Cluster) WaitMeshConfig(ctx context.Context, v string) error {
	want := `weft_ztunnel_config_info{version="` + v + `"} 1`
	return Poll(ctx, 15*time.Second, 100*time.Millisecond, "mesh config "+v+" served on every node", func(ctx context.Context) (bool, string, error) {
		for _, n := range c.Nodes() {
			out, err := c.ExecNode(ctx, n, "curl", "-sS", "--max-time", "2", "http://127.0.0.1:15020/metrics")
			if err != nil || !strings.Contains(string(out), want) {
				return false, n + " does not serve it yet", nil
			}
		}
		return true, "", nil
	})
}

// MeshCA is the file CA InstallMesh puts in the Secret weft-ca.
type MeshCA struct {
	CertPEM, KeyPEM []byte
}

// InstallMesh installs weft's chart with the real node proxy (weft-ztunnel):
// a generated CA in the Secret weft-ca, an initial mesh config on every
// node, then helm install with extra --set values, waiting until agents and
// ztunnels are ready on every node and weft-cni is chained. Without
// "operator.enabled=true" in set, ztunnel runs in file mode: the mesh state
// comes from SyncMeshConfig and certificates from the Secret's CA.
func (c *Cluster) InstallMesh(ctx context.Context, set ...string) (*MeshCA, error) {
	certPEM, keyPEM, err := meshpki.GenerateRoot("cluster.local", 30*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("generate mesh CA: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: WeftNamespace}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create namespace %s: %w", WeftNamespace, err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-ca", Namespace: WeftNamespace},
		Data:       map[string][]byte{"ca.crt": certPEM, "ca.key": keyPEM},
	}
	if _, err := c.Client.CoreV1().Secrets(WeftNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create secret weft-ca: %w", err)
	}
	if _, err := c.SyncMeshConfig(ctx, MeshOptions{}); err != nil {
		return nil, err
	}
	// File mode unless the caller enables the operator (later --set win).
	if err := c.helmInstall(ctx, append([]string{"ztunnel.enabled=true", "operator.enabled=false"}, set...)); err != nil {
		return nil, err
	}
	if err := c.waitDaemonSet(ctx, "weft-ztunnel"); err != nil {
		return nil, err
	}
	return &MeshCA{CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// helmInstall runs helm install of the chart with this cluster's pin roots
// and cgroup, and waits for weft-cni on every node.
func (c *Cluster) helmInstall(ctx context.Context, set []string) error {
	return c.InstallChart(ctx, set...)
}

// waitDaemonSet waits until the weft DaemonSet name is ready on every node.
func (c *Cluster) waitDaemonSet(ctx context.Context, name string) error {
	return Poll(ctx, 60*time.Second, 200*time.Millisecond, name+" ready on every node", func(ctx context.Context) (bool, string, error) {
		d, err := c.Client.AppsV1().DaemonSets(WeftNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return d.Status.NumberReady == int32(len(c.Nodes())), fmt.Sprintf("%d ready", d.Status.NumberReady), nil
	})
}
