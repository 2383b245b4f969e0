package caclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cav1 "github.com/weftmesh/weft/api/ca/v1"
	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

const serverName = "weft-operator.weft-system.svc"

var testID = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}

// fakeCA is a CSR service that signs with a real CA, answers with a
// programmable status, and records the tokens it was sent.
type fakeCA struct {
	cav1.UnimplementedCertificatesServer
	ca      *pki.CA
	rootPEM []byte

	mu     sync.Mutex
	tokens []string
	code   codes.Code
	// signAs, if set, is the identity the fake signs instead of the one
	// asked for.
	signAs spiffe.ID
	bundle []byte
}

func (f *fakeCA) Sign(ctx context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, strings.Join(md.Get("authorization"), ","))
	if f.code != codes.OK {
		return nil, status.Error(f.code, "fake refusal")
	}
	id := spiffe.ID{TrustDomain: "cluster.local", Namespace: req.Namespace, ServiceAccount: req.ServiceAccount}
	csr := req.CsrPem
	if !f.signAs.IsZero() {
		// A misbehaving server: a certificate for another identity.
		id = f.signAs
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr = mustCSR(key, id)
	}
	signed, err := f.ca.SignCSR(csr, id, time.Hour, time.Now())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	bundle := f.rootPEM
	if f.bundle != nil {
		bundle = f.bundle
	}
	return &cav1.SignResponse{CertificateChainPem: signed, TrustBundlePem: bundle}, nil
}

func (f *fakeCA) set(fn func(f *fakeCA)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeCA) sentTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

func mustCSR(key *ecdsa.PrivateKey, id spiffe.ID) []byte {
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		panic(err)
	}
	return csr
}

// newRootCA returns a root CA, its key and its PEM.
func newRootCA(tb testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// servingCert is a TLS server certificate for names, issued by the root.
func servingCert(tb testing.TB, root *x509.Certificate, rootKey *ecdsa.PrivateKey, names ...string) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type env struct {
	fake      *fakeCA
	addr      string
	bundle    []byte // trusted by clients by default
	tokenFile string
}

// startFake serves a fakeCA on loopback with a serving certificate for
// names, issued by a root whose PEM is env.bundle.
func startFake(tb testing.TB, names ...string) *env {
	tb.Helper()
	root, rootKey, rootPEM := newRootCA(tb, "operator root")
	meshCert, meshKey, err := pki.GenerateRoot("cluster.local", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	meshCA, err := pki.ParseCA(meshCert, meshKey)
	if err != nil {
		tb.Fatal(err)
	}
	f := &fakeCA{ca: meshCA, rootPEM: append(append([]byte(nil), rootPEM...), meshCert...)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{servingCert(tb, root, rootKey, names...)},
	})))
	cav1.RegisterCertificatesServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	tb.Cleanup(func() {
		srv.Stop()
		<-done
	})
	tokenFile := filepath.Join(tb.TempDir(), "token")
	writeToken(tb, tokenFile, "token-1")
	return &env{fake: f, addr: lis.Addr().String(), bundle: rootPEM, tokenFile: tokenFile}
}

func writeToken(tb testing.TB, path, token string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func (e *env) client(tb testing.TB, opts Options) *Client {
	tb.Helper()
	if opts.Addr == "" {
		opts.Addr = e.addr
	}
	if opts.ServerName == "" {
		opts.ServerName = serverName
	}
	if opts.TrustBundle == nil {
		opts.TrustBundle = e.bundle
	}
	if opts.TokenFile == "" {
		opts.TokenFile = e.tokenFile
	}
	c, err := New(opts)
	if err != nil {
		tb.Fatalf("New() error = %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func sign(tb testing.TB, c *Client) ([]byte, error) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Sign(ctx, mustCSR(key, testID), testID)
}

func TestSignSendsTheCurrentToken(t *testing.T) {
	e := startFake(t, serverName)
	c := e.client(t, Options{})
	chain, err := sign(t, c)
	if err != nil {
		t.Fatalf("Sign() error = %v", err)
	}
	block, _ := pem.Decode(chain)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := spiffe.FromCertificate(leaf); got != testID {
		t.Errorf("leaf identity = %s, want %s", got, testID)
	}
	// The kubelet rotated the projected token.
	writeToken(t, e.tokenFile, "token-2")
	if _, err := sign(t, c); err != nil {
		t.Fatalf("Sign() after rotation error = %v", err)
	}
	want := []string{"Bearer token-1", "Bearer token-2"}
	if got := e.fake.sentTokens(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("server saw authorization %q, want %q", got, want)
	}
	roots, _ := c.Roots()
	if len(roots) != 2 {
		t.Errorf("Roots() after an answer = %d roots, want the answer's 2", len(roots))
	}

	os.Remove(e.tokenFile)
	if _, err := sign(t, c); err == nil || !strings.Contains(err.Error(), "read the ServiceAccount token") || errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Sign() without a token file = %v, want a read error, not the operator's refusal", err)
	}
	if got := len(e.fake.sentTokens()); got != 2 {
		t.Errorf("server got %d calls, want 2: nothing is sent without a token", got)
	}
}

func TestSignErrors(t *testing.T) {
	e := startFake(t, serverName)
	tests := []struct {
		name string
		code codes.Code
		want error
	}{
		{name: "unauthenticated", code: codes.Unauthenticated, want: ErrUnauthenticated},
		{name: "permission denied", code: codes.PermissionDenied, want: ErrPermissionDenied},
		{name: "invalid argument", code: codes.InvalidArgument, want: ErrInvalidRequest},
		{name: "unavailable", code: codes.Unavailable, want: ErrUnavailable},
	}
	c := e.client(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.fake.set(func(f *fakeCA) { f.code = tt.code })
			_, err := sign(t, c)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Sign() = %v, want an error wrapping %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "fake refusal") || !strings.Contains(err.Error(), testID.String()) {
				t.Errorf("Sign() = %q, want it to name the identity and carry the operator's message", err)
			}
		})
	}
	e.fake.set(func(f *fakeCA) { f.code = codes.OK })

	t.Run("leaf for another identity", func(t *testing.T) {
		e.fake.set(func(f *fakeCA) {
			f.signAs = spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"}
		})
		defer e.fake.set(func(f *fakeCA) { f.signAs = spiffe.ID{} })
		if _, err := sign(t, c); !errors.Is(err, ErrBadResponse) {
			t.Errorf("Sign() = %v, want ErrBadResponse", err)
		}
	})
	t.Run("bundle that is not CAs", func(t *testing.T) {
		e.fake.set(func(f *fakeCA) { f.bundle = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") })
		defer e.fake.set(func(f *fakeCA) { f.bundle = nil })
		if _, err := sign(t, c); !errors.Is(err, ErrBadResponse) {
			t.Errorf("Sign() = %v, want ErrBadResponse", err)
		}
	})
}

func TestServerVerification(t *testing.T) {
	e := startFake(t, serverName, serverName+".cluster.local")
	_, _, otherRoot := newRootCA(t, "another root")
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{name: "trusted, right name", opts: Options{}},
		{name: "trusted, the other name", opts: Options{ServerName: serverName + ".cluster.local"}},
		{name: "wrong server name", opts: Options{ServerName: "weft-operator.elsewhere.svc"}, wantErr: "weft-operator.elsewhere.svc"},
		{name: "untrusted root", opts: Options{TrustBundle: otherRoot}, wantErr: "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.client(t, tt.opts)
			_, err := sign(t, c)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Sign() error = %v", err)
				}
				return
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Sign() = %v, want ErrUnavailable mentioning %q", err, tt.wantErr)
			}
		})
	}
	if got := len(e.fake.sentTokens()); got != 2 {
		t.Errorf("server saw %d tokens, want 2: a token is never sent to an unverified server", got)
	}
}

func TestNewRejects(t *testing.T) {
	_, _, root := newRootCA(t, "root")
	tests := []struct {
		name string
		opts Options
	}{
		{name: "no address", opts: Options{TokenFile: "/t", TrustBundle: root}},
		{name: "no token file", opts: Options{Addr: "op:1", TrustBundle: root}},
		{name: "no trust bundle", opts: Options{Addr: "op:1", TokenFile: "/t"}},
		{name: "address without port and no server name", opts: Options{Addr: "op", TokenFile: "/t", TrustBundle: root}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := New(tt.opts); err == nil {
				c.Close()
				t.Errorf("New(%+v) error = nil", tt.opts)
			}
		})
	}
}
