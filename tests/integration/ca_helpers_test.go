package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/operator/ca"
	"github.com/weftmesh/weft/tests/cluster"
)

// caTokenDir is where the CA tests' pods mount their weft-audience token,
// as the chart mounts ztunnel's.
const caTokenDir = "/var/run/secrets/weft"

func caCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// caCreateNamespace creates a namespace and ServiceAccounts in it, waiting
// for the default ServiceAccount that kube-controller-manager makes.
func caCreateNamespace(tb testing.TB, client kubernetes.Interface, name string, serviceAccounts ...string) {
	tb.Helper()
	ctx := caCtx(tb)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("create namespace %s: %v", name, err)
	}
	for _, sa := range serviceAccounts {
		if _, err := client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			tb.Fatalf("create serviceaccount %s/%s: %v", name, sa, err)
		}
	}
	err := cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, "default ServiceAccount in "+name, func(ctx context.Context) (bool, string, error) {
		_, err := client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err), nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// caPod is a sleeping test-app pod of ServiceAccount sa pinned to node, with
// a projected ServiceAccount token of audience "weft" in caTokenDir.
func caPod(name, sa, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName:            sa,
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{{
				Name: "main", Image: cluster.TestAppImage + ":dev", Command: []string{"/weft-testapp"}, Args: []string{"sleep"},
				VolumeMounts: []corev1.VolumeMount{{Name: "weft-token", MountPath: caTokenDir, ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "weft-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: ca.DefaultAudience, ExpirationSeconds: ptr.To[int64](3600), Path: "token",
				}}},
			}}}},
		},
	}
}

// caCreatePods creates pods in ns and waits until each is in phase.
func caCreatePods(tb testing.TB, client kubernetes.Interface, ns string, phase corev1.PodPhase, pods ...*corev1.Pod) {
	tb.Helper()
	ctx := caCtx(tb)
	for _, p := range pods {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			tb.Fatalf("create pod %s/%s: %v", ns, p.Name, err)
		}
	}
	for _, p := range pods {
		err := cluster.Poll(ctx, 90*time.Second, 100*time.Millisecond, fmt.Sprintf("pod %s/%s %s", ns, p.Name, phase), func(ctx context.Context) (bool, string, error) {
			got, err := client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			ok := got.Status.Phase == phase
			if phase == corev1.PodRunning {
				ok = ok && len(got.Status.ContainerStatuses) > 0 && got.Status.ContainerStatuses[0].State.Running != nil
			}
			return ok, fmt.Sprintf("phase %s on %q", got.Status.Phase, got.Spec.NodeName), nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// caPodToken reads the weft-audience token mounted in a pod, by exec as
// `kubectl exec cat` would, and writes it to a file for a client.
func caPodToken(tb testing.TB, c *cluster.Cluster, ns, pod, file string) string {
	tb.Helper()
	return caReadToken(tb, c, ns, pod, caTokenDir+"/token", file)
}

func caReadToken(tb testing.TB, c *cluster.Cluster, ns, pod, path, file string) string {
	tb.Helper()
	out, err := c.Exec(caCtx(tb), ns, pod, "", "cat", path)
	if err != nil {
		tb.Fatalf("read token of %s/%s: %v", ns, pod, err)
	}
	token := string(bytes.TrimSpace(out))
	if token == "" {
		tb.Fatalf("token of %s/%s at %s is empty", ns, pod, path)
	}
	if file != "" {
		caWriteToken(tb, file, token)
	}
	return token
}

func caWriteToken(tb testing.TB, file, token string) {
	tb.Helper()
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func caTokenFile(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), name)
}

// caRunServer runs a CA Server for authority on loopback until the test
// ends and returns its address and metrics registry.
func caRunServer(tb testing.TB, client kubernetes.Interface, authority *ca.Authority, log *slog.Logger, opts ca.ServerOptions) (string, *prometheus.Registry) {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts.Authority, opts.Client, opts.Listener, opts.Namespace = authority, client, lis, cluster.WeftNamespace
	opts.Registerer, opts.Log = reg, log
	s, err := ca.NewServer(opts)
	if err != nil {
		tb.Fatalf("NewServer() error = %v", err)
	}
	caRunInBackground(tb, "CA server", s.Run)
	return lis.Addr().String(), reg
}

// caRunInBackground runs run until the test ends, then cancels and waits
// for it, failing the test if it returned an error.
func caRunInBackground(tb testing.TB, what string, run func(context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("%s: Run() = %v", what, err)
		}
	})
}

// caSignCounts gathers weft_ca_sign_requests_total by result.
func caSignCounts(tb testing.TB, reg prometheus.Gatherer) map[string]int {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather metrics: %v", err)
	}
	out := map[string]int{}
	for _, f := range families {
		if f.GetName() != "weft_ca_sign_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}

// caLogBuffer collects log lines; safe for concurrent use.
type caLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *caLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines containing every one of words.
func (b *caLogBuffer) lines(words ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for line := range strings.Lines(b.buf.String()) {
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(line, w) }) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

func (b *caLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// caTestCA is a CA certificate and key made by the test, as a user or
// cert-manager would bring them.
type caTestCA struct {
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
	certPEM, keyPEM []byte
}

func caNewCA(tb testing.TB, name string, parent *caTestCA) *caTestCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return &caTestCA{
		cert: cert, key: key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}
}

// caCSR returns a CSR for id with a fresh key.
func caCSR(tb testing.TB, id spiffe.ID) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		tb.Fatal(err)
	}
	return csr
}

func caParseCerts(tb testing.TB, data []byte) []*x509.Certificate {
	tb.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			tb.Fatalf("parse certificate: %v", err)
		}
		certs = append(certs, c)
	}
}

// caVerify verifies a PEM chain, leaf first, against roots as a TLS peer
// would, and returns the leaf and its SPIFFE ID.
func caVerify(tb testing.TB, chainPEM []byte, roots ...*x509.Certificate) (*x509.Certificate, spiffe.ID) {
	tb.Helper()
	chain := caParseCerts(tb, chainPEM)
	if len(chain) == 0 {
		tb.Fatal("empty certificate chain")
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		tb.Fatalf("verify the signed chain against the root: %v", err)
	}
	id, err := spiffe.FromCertificate(chain[0])
	if err != nil {
		tb.Fatalf("identity of the signed certificate: %v", err)
	}
	return chain[0], id
}

// caPercentile is the p-th percentile (0..100) of sorted durations.
func caPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
