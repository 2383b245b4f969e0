package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version"]
- level: Metadata
`

// writeControlPlanePKI issues the API server's serving certificate and one
// client certificate per component, with the identities Kubernetes' default
// RBAC bindings expect.
func (c *Cluster) writeControlPlanePKI() error {
	cp := c.addr.controlPlane().String()
	hosts := []string{cp, apiServiceIP, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc." + clusterDomain}
	if err := c.pki.issue("apiserver", "kube-apiserver", nil, hosts); err != nil {
		return err
	}
	clients := []struct{ name, cn, org string }{
		{"admin", "kubernetes-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kube-proxy", "system:kube-proxy", ""},
	}
	for _, n := range c.run.state.Nodes {
		clients = append(clients, struct{ name, cn, org string }{"node-" + n, "system:node:" + n, "system:nodes"})
	}
	server := c.addr.apiServer()
	if err := os.MkdirAll(c.run.path("kubeconfigs"), 0o700); err != nil {
		return fmt.Errorf("create kubeconfig dir: %w", err)
	}
	for _, cl := range clients {
		var orgs []string
		if cl.org != "" {
			orgs = []string{cl.org}
		}
		if err := c.pki.issue(cl.name, cl.cn, orgs, nil); err != nil {
			return err
		}
		if err := c.pki.kubeconfig(c.run.path("kubeconfigs", cl.name+".yaml"), server, cl.name); err != nil {
			return err
		}
	}
	// The admin kubeconfig users and tests take.
	data, err := os.ReadFile(c.run.path("kubeconfigs", "admin.yaml"))
	if err != nil {
		return fmt.Errorf("read admin kubeconfig: %w", err)
	}
	return os.WriteFile(c.run.path("kubeconfig"), data, 0o600)
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	ns := netnsName(c.run.state.RunID, "cp")
	cg := filepath.Join(c.cgroup, "control-plane")
	p := c.pki.path
	kc := func(n string) string { return c.run.path("kubeconfigs", n+".yaml") }

	etcd, err := c.tools.etcd()
	if err != nil {
		return err
	}
	if err := c.spawn("etcd", ns, filepath.Join(cg, "etcd"), etcd,
		"--name=default", "--data-dir="+c.run.path("etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=default=http://127.0.0.1:2380", "--log-level=warn",
		"--unsafe-no-fsync", // the run dir is on tmpfs; durability buys nothing here
	); err != nil {
		return err
	}
	if err := os.WriteFile(c.run.path("audit-policy.yaml"), []byte(auditPolicy), 0o644); err != nil {
		return fmt.Errorf("write audit policy: %w", err)
	}
	apiserver, err := c.tools.kube("kube-apiserver")
	if err != nil {
		return err
	}
	if err := c.spawn("kube-apiserver", ns, filepath.Join(cg, "kube-apiserver"), apiserver,
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", "--secure-port="+strconv.Itoa(apiPort),
		"--advertise-address="+c.addr.controlPlane().String(),
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc."+clusterDomain,
		"--service-account-key-file="+p("sa.pub"), "--service-account-signing-key-file="+p("sa.key"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--audit-policy-file="+c.run.path("audit-policy.yaml"),
		"--audit-log-path="+c.AuditLog(),
		"--audit-log-format=json",
		"--profiling=false",
		"--event-ttl=1h",
		"--kubelet-preferred-address-types=InternalIP",
	); err != nil {
		return err
	}
	if err := c.waitAPIServer(ctx); err != nil {
		return err
	}
	kcm, err := c.tools.kube("kube-controller-manager")
	if err != nil {
		return err
	}
	if err := c.spawn("kube-controller-manager", ns, filepath.Join(cg, "kube-controller-manager"), kcm,
		"--kubeconfig="+kc("controller-manager"),
		"--authentication-kubeconfig="+kc("controller-manager"),
		"--authorization-kubeconfig="+kc("controller-manager"),
		"--bind-address=127.0.0.1", "--secure-port=10257",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+p("sa.key"),
		"--root-ca-file="+p("ca.crt"),
		"--cluster-signing-cert-file="+p("ca.crt"), "--cluster-signing-key-file="+p("ca.key"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--cluster-cidr="+podCIDR,
		"--controllers=*",
	); err != nil {
		return err
	}
	scheduler, err := c.tools.kube("kube-scheduler")
	if err != nil {
		return err
	}
	return c.spawn("kube-scheduler", ns, filepath.Join(cg, "kube-scheduler"), scheduler,
		"--kubeconfig="+kc("scheduler"),
		"--authentication-kubeconfig="+kc("scheduler"),
		"--authorization-kubeconfig="+kc("scheduler"),
		"--bind-address=127.0.0.1", "--secure-port=10259",
		"--leader-elect=false",
	)
}

// waitAPIServer polls /readyz with the admin certificate.
func (c *Cluster) waitAPIServer(ctx context.Context) error {
	ca, err := os.ReadFile(c.pki.path("ca.crt"))
	if err != nil {
		return fmt.Errorf("read ca: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(c.pki.path("admin.crt"), c.pki.path("admin.key"))
	if err != nil {
		return fmt.Errorf("load admin certificate: %w", err)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.addr.apiServer()+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if err := c.componentsAlive(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for kube-apiserver /readyz (last: %s; see %s): %w", last, c.run.path("logs"), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
