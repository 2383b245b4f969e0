package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	cav1 "github.com/weftmesh/weft/api/ca/v1"
	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/operator/ca"
	"github.com/weftmesh/weft/tests/cluster"
	"github.com/weftmesh/weft/ztunnel/caclient"
)

const caServerName = "weft-operator." + cluster.WeftNamespace + ".svc"

// TestCA runs the operator's mesh CA and its CSR service in the test process
// against the local cluster's real API server, and ztunnel's client against
// it, with tokens the API server issued to pods on the emulated nodes: the
// CA Secret in both user formats and generated once; a node proxy gets the
// identities of its own node's pods and nothing else, whatever it writes
// into the request; other ServiceAccounts, foreign audiences and unbound
// tokens are refused; malformed CSRs are invalid; and signing latency.
func TestCA(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Config{Name: "ca", Nodes: 2, SkipDNS: true, SkipKubeProxy: true})
	restCfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	node0, node1 := c.Nodes()[0], c.Nodes()[1]

	t.Run("CA Secret", func(t *testing.T) { testCASecret(t, admin) })

	// The mesh: node proxies on both nodes, an impostor ServiceAccount with
	// a weft-audience token, and workloads.
	ns := cluster.WeftNamespace
	caCreateNamespace(t, admin, ns, "weft-ztunnel", "weft-operator", "intruder")
	caCreateNamespace(t, admin, "shop", "cart", "web", "batch")
	batch := caPod("batch-0", "batch", node0)
	batch.Spec.RestartPolicy = corev1.RestartPolicyNever
	batch.Spec.Containers[0].Args = []string{"sleep", "--exit-after", "100ms"}
	caCreatePods(t, admin, ns, corev1.PodRunning, caPod("ztunnel-0", "weft-ztunnel", node0), caPod("ztunnel-1", "weft-ztunnel", node1), caPod("intruder-0", "intruder", node0))
	caCreatePods(t, admin, "shop", corev1.PodRunning, caPod("cart-0", "cart", node0), caPod("web-1", "web", node1))
	caCreatePods(t, admin, "shop", corev1.PodSucceeded, batch)

	// The CA runs as the operator's ServiceAccount with only the RBAC it
	// needs, so this also proves that RBAC is enough.
	operatorCfg := caOperatorConfig(t, admin, restCfg, ns)
	operator := caClient(t, operatorCfg)
	logs := &caLogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("CA log:\n%s", logs)
		}
	})
	ctx := caCtx(t)
	authority, err := ca.NewAuthority(ctx, ca.AuthorityOptions{Client: operator, Namespace: ns, Log: log})
	if err != nil {
		t.Fatalf("NewAuthority() error = %v", err)
	}
	caRunInBackground(t, "authority", authority.Run)
	addr, reg := caRunServer(t, operator, authority, log, ca.ServerOptions{})

	secret, err := admin.CoreV1().Secrets(ns).Get(ctx, ca.DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get the generated CA Secret: %v", err)
	}
	rootPEM := secret.Data[pki.CACertFile]
	roots := caParseCerts(t, rootPEM)
	if len(roots) != 1 {
		t.Fatalf("generated ca.crt holds %d certificates, want 1", len(roots))
	}
	root := roots[0]

	proxy0, proxy1, intruder := caTokenFile(t, "proxy0"), caTokenFile(t, "proxy1"), caTokenFile(t, "intruder")
	proxy0Token := caPodToken(t, c, ns, "ztunnel-0", proxy0)
	proxy1Token := caPodToken(t, c, ns, "ztunnel-1", proxy1)
	caPodToken(t, c, ns, "intruder-0", intruder)
	newClient := func(t *testing.T, tokenFile string) *caclient.Client {
		t.Helper()
		cl, err := caclient.New(caclient.Options{Addr: addr, ServerName: caServerName, TrustBundle: rootPEM, TokenFile: tokenFile})
		if err != nil {
			t.Fatalf("caclient.New() error = %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	id := func(namespace, sa string) spiffe.ID {
		return spiffe.ID{TrustDomain: spiffe.DefaultTrustDomain, Namespace: namespace, ServiceAccount: sa}
	}
	cart, web, batchID := id("shop", "cart"), id("shop", "web"), id("shop", "batch")
	sign := func(t *testing.T, cl *caclient.Client, want spiffe.ID) ([]byte, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(caCtx(t), 30*time.Second)
		defer cancel()
		return cl.Sign(ctx, caCSR(t, want), want)
	}

	t.Run("node proxy gets its own node's identity", func(t *testing.T) {
		for _, tt := range []struct {
			name      string
			tokenFile string
			id        spiffe.ID
		}{
			{name: "cart on " + node0, tokenFile: proxy0, id: cart},
			{name: "web on " + node1, tokenFile: proxy1, id: web},
		} {
			t.Run(tt.name, func(t *testing.T) {
				chain, err := sign(t, newClient(t, tt.tokenFile), tt.id)
				if err != nil {
					t.Fatalf("Sign(%s) error = %v", tt.id, err)
				}
				leaf, got := caVerify(t, chain, root)
				if got != tt.id {
					t.Errorf("signed identity = %s, want %s", got, tt.id)
				}
				if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tt.id.String() || len(leaf.DNSNames)+len(leaf.IPAddresses) != 0 {
					t.Errorf("SANs = URIs %v DNS %v IPs %v, want exactly the URI %s", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, tt.id)
				}
				if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 24*time.Hour || life > 24*time.Hour+2*time.Minute {
					t.Errorf("certificate lifetime = %v, want 24h", life)
				}
			})
		}
	})

	t.Run("no pod of the identity on the caller's node: denied, logged, counted", func(t *testing.T) {
		before := caSignCounts(t, reg)["permission_denied"]
		for _, tt := range []struct {
			name      string
			tokenFile string
			id        spiffe.ID
			node      string
		}{
			{name: "web from " + node0, tokenFile: proxy0, id: web, node: node0},
			{name: "cart from " + node1, tokenFile: proxy1, id: cart, node: node1},
			{name: "finished pod", tokenFile: proxy0, id: batchID, node: node0},
			{name: "no pod at all", tokenFile: proxy0, id: id("shop", "ghost"), node: node0},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := sign(t, newClient(t, tt.tokenFile), tt.id)
				if !errors.Is(err, caclient.ErrPermissionDenied) {
					t.Fatalf("Sign(%s) = %v, want ErrPermissionDenied", tt.id, err)
				}
				if lines := logs.lines("refused a CSR", "node="+tt.node, "identity="+tt.id.String()); len(lines) == 0 {
					t.Errorf("no log line names the refused CSR of %s from %s", tt.id, tt.node)
				}
			})
		}
		if got := caSignCounts(t, reg)["permission_denied"] - before; got != 4 {
			t.Errorf("weft_ca_sign_requests_total{result=permission_denied} rose by %d, want 4", got)
		}
	})

	t.Run("a node name in the request changes nothing", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(root)
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: caServerName,
		})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rpc := cav1.NewCertificatesClient(conn)
		call := func(token string, claimNode string) error {
			req := &cav1.SignRequest{CsrPem: caCSR(t, web), Namespace: web.Namespace, ServiceAccount: web.ServiceAccount}
			md := []string{"authorization", "Bearer " + token}
			if claimNode != "" {
				md = append(md, "node-name", claimNode, "x-node-name", claimNode, "kubernetes-node-name", claimNode)
				// As if a field "node" (number 4) existed: the server must
				// never act on what it does not know.
				req.ProtoReflect().SetUnknown(protowire.AppendString(protowire.AppendTag(nil, 4, protowire.BytesType), claimNode))
			}
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(caCtx(t), md...), 30*time.Second)
			defer cancel()
			_, err := rpc.Sign(ctx, req)
			return err
		}
		if err := call(proxy1Token, ""); err != nil {
			t.Fatalf("control: %s's proxy asking for web = %v, want signed", node1, err)
		}
		if err := call(proxy0Token, node1); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s's proxy claiming to be %s, asking for web = %v, want PermissionDenied", node0, node1, err)
		}
		if err := call(proxy1Token, node0); err != nil {
			t.Errorf("%s's proxy claiming to be %s, asking for web = %v, want signed as before", node1, node0, err)
		}
	})

	t.Run("a pod arriving on the node makes its identity signable, leaving revokes it", func(t *testing.T) {
		cl := newClient(t, proxy0)
		if _, err := sign(t, cl, web); !errors.Is(err, caclient.ErrPermissionDenied) {
			t.Fatalf("before: Sign(web) from %s = %v, want ErrPermissionDenied", node0, err)
		}
		caCreatePods(t, admin, "shop", corev1.PodRunning, caPod("web-0", "web", node0))
		caPoll(t, 10*time.Second, "web signable from "+node0, func() (bool, string) {
			_, err := sign(t, cl, web)
			return err == nil, fmt.Sprint(err)
		})
		if err := admin.CoreV1().Pods("shop").Delete(ctx, "web-0", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		caPoll(t, 30*time.Second, "web denied again on "+node0, func() (bool, string) {
			_, err := sign(t, cl, web)
			return errors.Is(err, caclient.ErrPermissionDenied), fmt.Sprint(err)
		})
	})

	t.Run("other tokens", func(t *testing.T) {
		kubeToken := caTokenFile(t, "kube-audience")
		caReadToken(t, c, ns, "ztunnel-0", "/var/run/secrets/kubernetes.io/serviceaccount/token", kubeToken)
		unbound := caTokenFile(t, "unbound")
		tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "weft-ztunnel", &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{ca.DefaultAudience}, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		caWriteToken(t, unbound, tr.Status.Token)
		forged := caTokenFile(t, "forged")
		// The node proxy's real token with its signature cut off and
		// another one appended.
		caWriteToken(t, forged, proxy0Token[:strings.LastIndex(proxy0Token, ".")+1]+"AAAA")

		for _, tt := range []struct {
			name      string
			tokenFile string
			want      error
			wantMsg   string
		}{
			{name: "another ServiceAccount's pod-bound weft token", tokenFile: intruder, want: caclient.ErrUnauthenticated, wantMsg: "system:serviceaccount:" + ns + ":intruder"},
			{name: "the node proxy's token for the API server's audience", tokenFile: kubeToken, want: caclient.ErrUnauthenticated},
			{name: "a forged signature", tokenFile: forged, want: caclient.ErrUnauthenticated},
			{name: "the node proxy's token bound to no pod", tokenFile: unbound, want: caclient.ErrPermissionDenied, wantMsg: "not bound to a pod on a node"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := sign(t, newClient(t, tt.tokenFile), cart)
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Sign(cart) = %v, want %q mentioning %q", err, tt.want, tt.wantMsg)
				}
			})
		}
		t.Run("the token file is read for every call", func(t *testing.T) {
			rotating := caTokenFile(t, "rotating")
			caWriteToken(t, rotating, proxy0Token)
			cl := newClient(t, rotating)
			if _, err := sign(t, cl, cart); err != nil {
				t.Fatalf("Sign(cart) = %v", err)
			}
			caPodToken(t, c, ns, "intruder-0", rotating)
			if _, err := sign(t, cl, cart); !errors.Is(err, caclient.ErrUnauthenticated) {
				t.Fatalf("Sign(cart) after the file changed to the intruder's token = %v, want ErrUnauthenticated", err)
			}
		})
	})

	t.Run("malformed CSRs are invalid", func(t *testing.T) {
		cl := newClient(t, proxy0)
		garbage := []byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIBAA==\n-----END CERTIFICATE REQUEST-----\n")
		for _, tt := range []struct {
			name string
			csr  []byte
		}{
			{name: "garbage", csr: garbage},
			{name: "not PEM", csr: []byte("hello")},
			{name: "for another identity", csr: caCSR(t, web)},
		} {
			t.Run(tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(caCtx(t), 30*time.Second)
				defer cancel()
				if _, err := cl.Sign(ctx, tt.csr, cart); !errors.Is(err, caclient.ErrInvalidRequest) {
					t.Fatalf("Sign(cart, %s CSR) = %v, want ErrInvalidRequest", tt.name, err)
				}
			})
		}
	})

	t.Run("serving certificate", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(root)
		for _, name := range []string{caServerName, caServerName + ".cluster.local"} {
			conn, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: name, NextProtos: []string{"h2"}})
			if err != nil {
				t.Errorf("TLS to the CA service as %s: %v", name, err)
				continue
			}
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			if want := []string{caServerName, caServerName + ".cluster.local"}; !slices.Equal(leaf.DNSNames, want) {
				t.Errorf("serving certificate DNS names = %v, want %v", leaf.DNSNames, want)
			}
		}
		if conn, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "kubernetes.default.svc", NextProtos: []string{"h2"}}); err == nil {
			conn.Close()
			t.Error("TLS to the CA service as kubernetes.default.svc succeeded")
		}
		cl, err := caclient.New(caclient.Options{Addr: addr, ServerName: "weft-operator.other.svc", TrustBundle: rootPEM, TokenFile: proxy0})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := sign(t, cl, cart); !errors.Is(err, caclient.ErrUnavailable) {
			t.Errorf("Sign() verifying the wrong server name = %v, want ErrUnavailable", err)
		}
	})

	t.Run("latency", func(t *testing.T) {
		// client-go's default rate limit (5 requests/s) would be all this
		// measures; the operator's client must allow more.
		fastCfg := rest.CopyConfig(operatorCfg)
		fastCfg.QPS, fastCfg.Burst = 1000, 1000
		uncachedAddr, _ := caRunServer(t, caClient(t, fastCfg), authority, log, ca.ServerOptions{TokenCacheTTL: -1})
		cached := newClient(t, proxy0)
		uncached, err := caclient.New(caclient.Options{Addr: uncachedAddr, ServerName: caServerName, TrustBundle: rootPEM, TokenFile: proxy0})
		if err != nil {
			t.Fatal(err)
		}
		defer uncached.Close()
		const n = 200
		csrs := make([][]byte, n)
		for i := range csrs {
			csrs[i] = caCSR(t, cart)
		}
		measure := func(name string, cl *caclient.Client, workers int) {
			// One call first: the connection and the cache are warm.
			if _, err := sign(t, cl, cart); err != nil {
				t.Fatalf("%s: warm-up Sign() = %v", name, err)
			}
			lat := make([]time.Duration, n)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var errs []error
			began := time.Now()
			for w := range workers {
				wg.Go(func() {
					for i := w; i < n; i += workers {
						start := time.Now()
						_, err := cl.Sign(context.Background(), csrs[i], cart)
						lat[i] = time.Since(start)
						if err != nil {
							mu.Lock()
							errs = append(errs, err)
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(began)
			if len(errs) != 0 {
				t.Fatalf("%s: %d of %d signs failed, first: %v", name, len(errs), n, errs[0])
			}
			slices.Sort(lat)
			t.Logf("signing latency, %s, %d requests, %d in flight: p50 %v, p99 %v, max %v; %.0f signs/s",
				name, n, workers, caPercentile(lat, 50).Round(10*time.Microsecond), caPercentile(lat, 99).Round(10*time.Microsecond),
				lat[n-1].Round(10*time.Microsecond), float64(n)/elapsed.Seconds())
		}
		measure("token review cached (default)", cached, 1)
		measure("token review cached (default)", cached, 8)
		measure("a TokenReview per request", uncached, 1)
		measure("a TokenReview per request", uncached, 8)
	})
}

// testCASecret: the CA Secret is used exactly as a user supplies it in both
// formats, and generated once when absent, even by two replicas at once.
func testCASecret(t *testing.T, admin kubernetes.Interface) {
	ctx := caCtx(t)
	caCreateNamespace(t, admin, "ca-secrets")
	secrets := admin.CoreV1().Secrets("ca-secrets")
	signs := func(t *testing.T, a *ca.Authority, roots ...*x509.Certificate) {
		t.Helper()
		want := spiffe.ID{TrustDomain: spiffe.DefaultTrustDomain, Namespace: "shop", ServiceAccount: "cart"}
		chain, err := a.Signer().SignCSR(caCSR(t, want), want, time.Hour, time.Now())
		if err != nil {
			t.Fatalf("SignCSR() error = %v", err)
		}
		caVerify(t, chain, roots...)
	}

	t.Run("absent: generated once, by one of two replicas starting at once", func(t *testing.T) {
		const name = "generated"
		var wg sync.WaitGroup
		authorities := make([]*ca.Authority, 2)
		errs := make([]error, 2)
		for i := range authorities {
			wg.Go(func() {
				authorities[i], errs[i] = ca.NewAuthority(ctx, ca.AuthorityOptions{Client: admin, Namespace: "ca-secrets", SecretName: name})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("replica %d: NewAuthority() error = %v", i, err)
			}
		}
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		stored := caParseCerts(t, s.Data[pki.CACertFile])
		if len(stored) != 1 || len(s.Data[pki.CAKeyFile]) == 0 {
			t.Fatalf("generated Secret holds %d certificates and a %d-byte key, want 1 and a key", len(stored), len(s.Data[pki.CAKeyFile]))
		}
		for i, a := range authorities {
			if !a.Signer().Certificate().Equal(stored[0]) {
				t.Errorf("replica %d signs with %q, not the stored root", i, a.Signer().Certificate().Subject)
			}
			signs(t, a, stored[0])
		}
		// A restart keeps it.
		again, err := ca.NewAuthority(ctx, ca.AuthorityOptions{Client: admin, Namespace: "ca-secrets", SecretName: name})
		if err != nil {
			t.Fatal(err)
		}
		after, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !again.Signer().Certificate().Equal(stored[0]) || after.ResourceVersion != s.ResourceVersion {
			t.Errorf("after a restart: signer %q, Secret version %s→%s; want the stored root, unchanged", again.Signer().Certificate().Subject, s.ResourceVersion, after.ResourceVersion)
		}
	})

	root := caNewCA(t, "user root", nil)
	inter := caNewCA(t, "user intermediate", root)
	for _, tt := range []struct {
		name       string
		secretType corev1.SecretType
		data       map[string][]byte
		signer     *x509.Certificate
	}{
		{name: "weft format", secretType: corev1.SecretTypeOpaque, data: map[string][]byte{pki.CACertFile: root.certPEM, pki.CAKeyFile: root.keyPEM}, signer: root.cert},
		{name: "cert-manager format", secretType: corev1.SecretTypeTLS, data: map[string][]byte{
			pki.TLSCertFile: inter.certPEM, pki.TLSKeyFile: inter.keyPEM, pki.CACertFile: root.certPEM,
		}, signer: inter.cert},
	} {
		t.Run("user-supplied, "+tt.name+": used as is", func(t *testing.T) {
			name := strings.ReplaceAll(tt.name, " ", "-")
			created, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: tt.secretType, Data: tt.data}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			a, err := ca.NewAuthority(ctx, ca.AuthorityOptions{Client: admin, Namespace: "ca-secrets", SecretName: name})
			if err != nil {
				t.Fatalf("NewAuthority() error = %v", err)
			}
			if !a.Signer().Certificate().Equal(tt.signer) {
				t.Errorf("signer = %q, want %q", a.Signer().Certificate().Subject, tt.signer.Subject)
			}
			if got := a.TrustBundle(); len(got) != 1 || !got[0].Equal(root.cert) {
				t.Errorf("trust bundle has %d roots, want exactly the user's root", len(got))
			}
			signs(t, a, root.cert)
			after, err := secrets.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if after.ResourceVersion != created.ResourceVersion {
				t.Errorf("the user's Secret was written: version %s→%s", created.ResourceVersion, after.ResourceVersion)
			}
		})
	}
}

// caOperatorConfig is a REST config acting as the operator's
// ServiceAccount, bound to exactly the RBAC the CA needs.
func caOperatorConfig(t *testing.T, admin kubernetes.Interface, restCfg *rest.Config, ns string) *rest.Config {
	t.Helper()
	ctx := caCtx(t)
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-operator-ca"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{ca.DefaultSecretName}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-operator-ca"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "weft-operator", Namespace: ns}}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-operator-ca"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "weft-operator-ca"},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-operator-ca"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "weft-operator-ca"},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":weft-operator",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	return cfg
}

func caClient(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// caPoll calls cond until it holds, failing with its last reason after
// timeout.
func caPoll(tb testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	err := cluster.Poll(caCtx(tb), timeout, 100*time.Millisecond, what, func(context.Context) (bool, string, error) {
		ok, why := cond()
		return ok, why, nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}
