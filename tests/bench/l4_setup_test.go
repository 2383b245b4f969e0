//go:build bench

package bench

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/tests/cluster"
)

// Images of the benchmark's peers, mapped by the node emulator to the local
// binaries (cluster.Config.Images).
const (
	fortioImage  = "bench.weft.test/fortio"
	iperfImage   = "bench.weft.test/iperf3"
	stunnelImage = "bench.weft.test/stunnel4"
)

// Ports inside the benchmark's pods.
const (
	fortioPort         = 8080  // fortio server (HTTP echo)
	iperfPort          = 5201  // iperf3 -s
	stunnelFortioLocal = 18080 // client pod: stunnel client → server's stunnelFortioTLS
	stunnelIperfLocal  = 15201 // client pod: stunnel client → server's stunnelIperfTLS
	stunnelFortioTLS   = 18443 // server pod: stunnel server → 127.0.0.1:fortioPort
	stunnelIperfTLS    = 15443 // server pod: stunnel server → 127.0.0.1:iperfPort
)

// stunnelServerName is the DNS name in the stunnel server's certificate,
// which the stunnel clients check.
const stunnelServerName = "l4-server.bench.weft.test"

// l4Tools are the local binaries of the peers.
type l4Tools struct {
	fortio, iperf3, stunnel string
}

// findL4Tools locates fortio in the versioned tool cache (building it with
// hack/tools.sh when the cache is cold) and iperf3 and stunnel4 on PATH.
func findL4Tools(tb testing.TB) l4Tools {
	tb.Helper()
	repo, err := cluster.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	version, err := toolVersion(filepath.Join(repo, "hack", "versions.env"), "FORTIO_VERSION")
	if err != nil {
		tb.Fatal(err)
	}
	cache := filepath.Join(repo, ".cache")
	if c := os.Getenv("WEFT_CACHE"); c != "" {
		cache = c
	}
	dir := filepath.Join(cache, "bin", "fortio-"+version)
	if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
		cmd := exec.Command("bash", filepath.Join(repo, "hack", "tools.sh"), "fortio")
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("build fortio %s with hack/tools.sh: %v\n%s", version, err, out)
		}
	}
	t := l4Tools{fortio: filepath.Join(dir, "fortio")}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"iperf3", &t.iperf3}, {"stunnel4", &t.stunnel}} {
		if *p.dst, err = exec.LookPath(p.name); err != nil {
			tb.Fatalf("find %s: %v (hack/tools.sh apt installs it)", p.name, err)
		}
	}
	return t
}

// toolVersion reads KEY=value from hack/versions.env.
func toolVersion(path, key string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read tool versions: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			return v, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read tool versions: %w", err)
	}
	return "", fmt.Errorf("read tool versions: %s missing from %s", key, path)
}

// writeStunnelPKI writes a test CA, a server certificate for
// stunnelServerName and a client certificate (ECDSA P-256, both signed by
// the CA) into dir, as PEM files ca.pem, server.pem/.key, client.pem/.key.
func writeStunnelPKI(tb testing.TB, dir string) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "weft bench-l4 test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	writePEM(tb, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, dns []string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "l4-" + name},
			DNSNames:     dns,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			tb.Fatal(err)
		}
		writePEM(tb, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
		writePEM(tb, filepath.Join(dir, name+".key"), "PRIVATE KEY", keyDER)
	}
	leaf("server", 2, x509.ExtKeyUsageServerAuth, []string{stunnelServerName})
	leaf("client", 3, x509.ExtKeyUsageClientAuth, nil)
}

func writePEM(tb testing.TB, path, kind string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		tb.Fatalf("write %s: %v", path, err)
	}
}

// stunnelService is one tunnel of a stunnel configuration.
type stunnelService struct {
	name            string
	accept, connect string
}

// stunnelConfig is a stunnel4 configuration with mutual TLS 1.3: each side
// presents its certificate and verifies the peer's chain against the test
// CA; the client also checks the server's name. role is "server" or
// "client" (the certificate it presents).
func stunnelConfig(pkiDir, role string, services []stunnelService) string {
	var b strings.Builder
	// Foreground, logging to stderr (the container log); no pid file, so
	// several instances share the host's file system.
	fmt.Fprintf(&b, "foreground = yes\nsyslog = no\npid =\ndebug = notice\n")
	for _, s := range services {
		fmt.Fprintf(&b, "\n[%s]\n", s.name)
		if role == "client" {
			fmt.Fprintf(&b, "client = yes\ncheckHost = %s\n", stunnelServerName)
		}
		fmt.Fprintf(&b, "accept = %s\nconnect = %s\n", s.accept, s.connect)
		fmt.Fprintf(&b, "cert = %s\nkey = %s\nCAfile = %s\n",
			filepath.Join(pkiDir, role+".pem"), filepath.Join(pkiDir, role+".key"), filepath.Join(pkiDir, "ca.pem"))
		fmt.Fprintf(&b, "verifyChain = yes\nrequireCert = yes\nsslVersionMin = TLSv1.3\nsslVersionMax = TLSv1.3\n")
		fmt.Fprintf(&b, "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n")
	}
	return b.String()
}

// writeStunnelConfig writes a configuration file and returns its path.
func writeStunnelConfig(tb testing.TB, dir, name, text string) string {
	tb.Helper()
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		tb.Fatalf("write stunnel config: %v", err)
	}
	return path
}

// l4Container runs an image's binary with args.
func l4Container(name, image string, args ...string) corev1.Container {
	return corev1.Container{Name: name, Image: image + ":bench", Args: args, Env: podEnv()}
}

// l4Pod is a bare pod pinned to node.
func l4Pod(name, node string, ctrs ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers:                    ctrs,
		},
	}
}

// serverContainers are the server pod's: fortio's HTTP echo server (its
// gRPC, redirect, TCP and UDP echo servers off) and iperf3.
func serverContainers() []corev1.Container {
	return []corev1.Container{
		l4Container("fortio", fortioImage, "server", "-http-port", fmt.Sprint(fortioPort), "-grpc-port", "disabled",
			"-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled", "-loglevel", "warning"),
		l4Container("iperf3", iperfImage, "-s", "-p", fmt.Sprint(iperfPort)),
	}
}

// clientContainer is the client pod's main container, into which the
// benchmark execs fortio and iperf3.
func clientContainer() corev1.Container {
	return corev1.Container{Name: "main", Image: cluster.TestAppImage + ":dev", Command: []string{testapp}, Args: []string{"sleep"}, Env: podEnv()}
}

// waitUntil polls f (a short run of a client) until it succeeds, for pods
// whose servers have no readiness probe: probes would connect during the
// measurements.
func waitUntil(ctx context.Context, tb testing.TB, what string, f func(context.Context) error) {
	tb.Helper()
	err := cluster.Poll(ctx, 90*time.Second, 500*time.Millisecond, what, func(ctx context.Context) (bool, string, error) {
		if err := f(ctx); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}
