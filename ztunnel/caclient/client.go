package caclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	cav1 "github.com/weftmesh/weft/api/ca/v1"
	"github.com/weftmesh/weft/internal/spiffe"
	"github.com/weftmesh/weft/ztunnel/identity"
)

// Errors of Sign, by what the operator answered. Each wraps the operator's
// own message.
var (
	// ErrUnauthenticated: the operator did not accept the token (expired,
	// wrong audience, not the node proxy's ServiceAccount).
	ErrUnauthenticated = errors.New("the operator did not accept the node proxy's token")
	// ErrPermissionDenied: the token is not bound to a pod on a node, or no
	// pod with the identity's ServiceAccount runs on this node.
	ErrPermissionDenied = errors.New("the operator refused to sign the identity for this node")
	// ErrInvalidRequest: the identity or the CSR is malformed, or the CSR
	// asks for more than the identity.
	ErrInvalidRequest = errors.New("the operator refused the request as invalid")
	// ErrUnavailable: the operator cannot be reached or verified (TLS),
	// or cannot review tokens now. Retrying later may work.
	ErrUnavailable = errors.New("the operator's CA service is unavailable")
	// ErrBadResponse: the operator answered with a chain that is not for
	// the identity asked for.
	ErrBadResponse = errors.New("the operator's answer is not a certificate for the identity asked for")
)

// DefaultTimeout bounds one Sign call when its context has no deadline.
const DefaultTimeout = 15 * time.Second

// Options configure a Client.
type Options struct {
	// Addr is the CSR service, host:port (e.g.
	// weft-operator.weft-system.svc:15012). Required.
	Addr string
	// ServerName is the DNS name the serving certificate must hold;
	// default the host of Addr.
	ServerName string
	// TrustBundle holds the PEM roots the serving certificate must chain
	// to: the mesh trust bundle. Required; each response's bundle replaces
	// it (see SetTrustBundle).
	TrustBundle []byte
	// TokenFile is the projected ServiceAccount token (audience "weft"),
	// read again on every call because the kubelet rotates it. Required.
	TokenFile string
	// Timeout bounds a call whose context has no deadline; default
	// DefaultTimeout.
	Timeout time.Duration
	// Dialer, if set, opens the connections (e.g. from another netns).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

// Client signs CSRs with the operator's CSR service: it implements
// identity.Signer, and identity.RootSource with the trust bundle of the
// latest answer. It holds one gRPC connection, opened lazily and re-opened
// as needed; Close releases it. It is safe for concurrent use.
type Client struct {
	addr      string
	timeout   time.Duration
	conn      *grpc.ClientConn
	rpc       cav1.CertificatesClient
	tokenFile string

	// mu guards the fields below.
	mu sync.Mutex
	// roots verify the server and are what Roots returns; never empty.
	roots []*x509.Certificate
	pool  *x509.CertPool
}

// New returns a Client. It does no I/O: the first Sign connects.
func New(opts Options) (*Client, error) {
	if opts.Addr == "" || opts.TokenFile == "" {
		return nil, errors.New("create CA client: an address and a token file are required")
	}
	serverName := opts.ServerName
	if serverName == "" {
		host, _, err := net.SplitHostPort(opts.Addr)
		if err != nil {
			return nil, fmt.Errorf("create CA client: %w", err)
		}
		serverName = host
	}
	c := &Client{addr: opts.Addr, timeout: opts.Timeout, tokenFile: opts.TokenFile}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if err := c.SetTrustBundle(opts.TrustBundle); err != nil {
		return nil, fmt.Errorf("create CA client: %w", err)
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// The bundle changes during a CA rotation while the connection
		// lives on, so the server is verified in VerifyConnection against
		// the current bundle instead of a pool fixed here. Verification is
		// not skipped: VerifyConnection runs on every handshake and fails
		// it unless the chain verifies for serverName.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return c.verifyServer(cs, serverName)
		},
	}
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsConf))}
	if opts.Dialer != nil {
		dialOpts = append(dialOpts, grpc.WithContextDialer(opts.Dialer))
	}
	conn, err := grpc.NewClient("passthrough:///"+opts.Addr, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("create CA client for %s: %w", opts.Addr, err)
	}
	c.conn, c.rpc = conn, cav1.NewCertificatesClient(conn)
	return c, nil
}

// Close closes the connection. Sign fails afterwards.
func (c *Client) Close() error { return c.conn.Close() }

// Sign implements identity.Signer: it asks the operator to sign csrPEM for
// id and returns the PEM chain, leaf first. The errors wrap ErrUnauthenticated,
// ErrPermissionDenied, ErrInvalidRequest, ErrUnavailable or ErrBadResponse,
// or the context's error.
func (c *Client) Sign(ctx context.Context, csrPEM []byte, id spiffe.ID) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	token, err := readToken(c.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("sign %s with the operator at %s: %w", id, c.addr, err)
	}
	resp, err := c.rpc.Sign(ctx, &cav1.SignRequest{CsrPem: csrPEM, Namespace: id.Namespace, ServiceAccount: id.ServiceAccount},
		grpc.PerRPCCredentials(bearerToken(token)))
	if err != nil {
		return nil, fmt.Errorf("sign %s with the operator at %s: %w", id, c.addr, mapError(ctx, err))
	}
	if err := checkChain(resp.GetCertificateChainPem(), id); err != nil {
		return nil, fmt.Errorf("sign %s with the operator at %s: %w", id, c.addr, err)
	}
	if b := resp.GetTrustBundlePem(); len(bytes.TrimSpace(b)) != 0 {
		if err := c.SetTrustBundle(b); err != nil {
			return nil, fmt.Errorf("sign %s with the operator at %s: %w: trust bundle: %w", id, c.addr, ErrBadResponse, err)
		}
	}
	return resp.GetCertificateChainPem(), nil
}

// Roots implements identity.RootSource: the trust bundle of the latest
// answer, or the one given to New or SetTrustBundle if that is newer.
func (c *Client) Roots() ([]*x509.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*x509.Certificate(nil), c.roots...), nil
}

// SetTrustBundle replaces the roots the server is verified against (and
// Roots returns), e.g. with the bundle of the config stream. pemData must
// hold at least one PEM CA certificate; on error nothing changes.
func (c *Client) SetTrustBundle(pemData []byte) error {
	var roots []*x509.Certificate
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("set trust bundle: PEM block %d is %q, want CERTIFICATE", len(roots), block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("set trust bundle: parse certificate %d: %w", len(roots), err)
		}
		if !cert.IsCA || !cert.BasicConstraintsValid {
			return fmt.Errorf("set trust bundle: certificate %d (%q) is not a CA", len(roots), cert.Subject)
		}
		roots = append(roots, cert)
	}
	if len(roots) == 0 {
		return errors.New("set trust bundle: no PEM certificate")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roots, c.pool = roots, pool
	return nil
}

// verifyServer checks the server's chain against the current bundle and
// serverName.
func (c *Client) verifyServer(cs tls.ConnectionState, serverName string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("verify the operator: it presented no certificate")
	}
	c.mu.Lock()
	pool := c.pool
	c.mu.Unlock()
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify the operator's certificate for %s against the mesh trust bundle: %w", serverName, err)
	}
	return nil
}

// mapError turns a gRPC error into one wrapping this package's sentinels.
func mapError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%w (%v)", ctxErr, status.Convert(err).Message())
	}
	st := status.Convert(err)
	var kind error
	switch st.Code() {
	case codes.Unauthenticated:
		kind = ErrUnauthenticated
	case codes.PermissionDenied:
		kind = ErrPermissionDenied
	case codes.InvalidArgument:
		kind = ErrInvalidRequest
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		kind = ErrUnavailable
	default:
		return fmt.Errorf("the operator answered %s: %s", st.Code(), st.Message())
	}
	return fmt.Errorf("%w: %s", kind, st.Message())
}

// checkChain checks that the chain's leaf is a certificate for id.
func checkChain(chainPEM []byte, id spiffe.ID) error {
	block, _ := pem.Decode(chainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return fmt.Errorf("%w: no PEM certificate", ErrBadResponse)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("%w: parse the leaf: %w", ErrBadResponse, err)
	}
	got, err := spiffe.FromCertificate(leaf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	switch {
	case got.TrustDomain != id.TrustDomain:
		return fmt.Errorf("%w: the operator signs trust domain %q, not %q", ErrBadResponse, got.TrustDomain, id.TrustDomain)
	case got != id:
		return fmt.Errorf("%w: the leaf is for %s", ErrBadResponse, got)
	}
	return nil
}

// readToken reads the projected token; the kubelet replaces the file's
// content before the token expires, so it is read for every call.
func readToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the ServiceAccount token: %w", err)
	}
	token := string(bytes.TrimSpace(data))
	if token == "" {
		return "", fmt.Errorf("read the ServiceAccount token: %s is empty", path)
	}
	return token, nil
}

// bearerToken attaches a token to one call, and only over TLS.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }

var (
	_ identity.Signer     = (*Client)(nil)
	_ identity.RootSource = (*Client)(nil)
)
