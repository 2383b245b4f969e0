package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/tests/cluster"
)

// svid issues a certificate for id from the CA in certPEM/keyPEM and writes
// cert and key PEM files into dir.
func svid(t *testing.T, dir, name string, certPEM, keyPEM []byte, id spiffe.ID) (certFile, keyFile string) {
	t.Helper()
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.SignCSR(csr, id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// sClient runs openssl s_client from node0 to the server pod's HBONE port,
// keeping the connection open a second so the server's verdict on the
// client certificate (sent after the client's Finished in TLS 1.3) arrives.
func (m *meshApp) sClient(t *testing.T, caFile string, certAndKey ...string) string {
	t.Helper()
	args := fmt.Sprintf("openssl s_client -connect %s:15008 -tls1_3 -alpn h2 -CAfile %s -showcerts", m.serverIP, caFile)
	if len(certAndKey) == 2 {
		args += fmt.Sprintf(" -cert %s -key %s", certAndKey[0], certAndKey[1])
	}
	out, _ := m.c.ExecNode(testCtx(t), "node0", "sh", "-c", "sleep 1 | "+args+" 2>&1")
	return string(out)
}

func (m *meshApp) opensslChecks(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "mesh-ca.crt")
	if err := os.WriteFile(caFile, m.ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	idA, _ := spiffe.NewID("cluster.local", m.ns, "a")
	validCert, validKey := svid(t, dir, "valid", m.ca.CertPEM, m.ca.KeyPEM, idA)
	otherCert, otherKeyPEM, err := pki.GenerateRoot("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey := svid(t, dir, "foreign", otherCert, otherKeyPEM, idA)

	valid := m.sClient(t, caFile, validCert, validKey)
	if !strings.Contains(valid, "Verify return code: 0 (ok)") || strings.Contains(valid, "alert") {
		t.Errorf("s_client with a valid mesh SVID did not get through:\n%s", valid)
	}
	if !strings.Contains(valid, "ALPN protocol: h2") {
		t.Errorf("server did not negotiate h2:\n%s", valid)
	}
	// The server's certificate names the server's ServiceAccount.
	block, _ := pem.Decode([]byte(valid[strings.Index(valid, "-----BEGIN CERTIFICATE-----"):]))
	if block == nil {
		t.Fatalf("no server certificate in s_client output:\n%s", valid)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	wantSAN := "spiffe://cluster.local/ns/" + m.ns + "/sa/server"
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantSAN {
		t.Errorf("server certificate URI SANs = %v, want [%s]", leaf.URIs, wantSAN)
	}

	for name, out := range map[string]string{
		"no client certificate":         m.sClient(t, caFile),
		"a certificate from another CA": m.sClient(t, caFile, foreignCert, foreignKey),
	} {
		if !strings.Contains(out, "alert") {
			t.Errorf("s_client with %s was not refused:\n%s", name, out)
		}
	}
}

// prometheusCheck runs the Debian Prometheus server against both nodes'
// ztunnels and compares its istio_tcp_connections_opened_total with the
// connections a fresh client Deployment opened.
func (m *meshApp) prometheusCheck(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus (Debian package, installed by hack/tools.sh): %v", err)
	}
	ctx := testCtx(t)
	deployment(t, m.c, m.ns, "counted", "a", "node0", sleepContainer())
	pod := podOf(t, m.c, m.ns, "counted")
	m.sync(t)
	const conns = 7
	out, err := m.c.Exec(ctx, m.ns, pod.Name, "", appBinary(m.c), "tcp", m.vip+":9000", "--count", fmt.Sprint(conns))
	if err != nil {
		t.Fatalf("tcp from counted: %v\n%s", err, out)
	}

	dir := t.TempDir()
	var targets []string
	for _, n := range m.c.Nodes() {
		targets = append(targets, fmt.Sprintf("%q", m.c.NodeIP(n)+":15020"))
	}
	config := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: ztunnel\n  static_configs:\n  - targets: [%s]\n", strings.Join(targets, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	query := `sum by (source_workload, destination_workload) (istio_tcp_connections_opened_total{reporter="destination", source_workload="counted"})`
	var last string
	err = cluster.Poll(ctx, 60*time.Second, 500*time.Millisecond, "Prometheus sees the connections", func(ctx context.Context) (bool, string, error) {
		resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(query))
		if err != nil {
			return false, err.Error(), nil
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  []any             `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return false, err.Error(), nil
		}
		last = fmt.Sprintf("%+v", r.Data.Result)
		if len(r.Data.Result) != 1 || len(r.Data.Result[0].Value) != 2 {
			return false, last, nil
		}
		res := r.Data.Result[0]
		v, _ := res.Value[1].(string)
		return v == fmt.Sprint(conns) && res.Metric["destination_workload"] == "server", last, nil
	})
	if err != nil {
		data, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
		t.Fatalf("%v (last result %s)\nprometheus log tail:\n%s", err, last, tail(string(data), 20))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
