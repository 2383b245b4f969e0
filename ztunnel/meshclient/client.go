package meshclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/internal/meshstream"
	"github.com/weftmesh/weft/ztunnel/state"
)

// Config configures Run.
type Config struct {
	// Addr is the operator's gRPC address (host:port). Required.
	Addr string
	// Node is this node's name; the operator checks it against the
	// credentials. Required.
	Node string
	// TokenFile is the projected ServiceAccount token (audience "weft"),
	// read on every stream because it rotates. Required.
	TokenFile string
	// Roots returns the mesh trust bundle the operator's serving
	// certificate must chain to; called on every handshake, so a CA
	// rotation needs no restart. Required.
	Roots func() *x509.CertPool
}

// Run streams the node's mesh config from the operator into store until
// ctx ends, reconnecting as needed; the store keeps the last applied
// snapshot while the operator is unreachable.
func Run(ctx context.Context, cfg Config, store *state.Store, log *slog.Logger) error {
	if cfg.Addr == "" || cfg.Node == "" || cfg.TokenFile == "" || cfg.Roots == nil {
		return errors.New("run mesh config client: address, node, token file and roots are required")
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return fmt.Errorf("run mesh config client: %w", err)
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: host,
		// Verified in VerifyConnection against the bundle current at each
		// handshake (it changes during a CA rotation); never skipped.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("operator sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				DNSName: host, Roots: cfg.Roots(), Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("verify operator certificate for %s: %w", host, err)
			}
			return nil
		},
	}
	cc, err := grpc.NewClient("passthrough:///"+cfg.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		return fmt.Errorf("run mesh config client: %w", err)
	}
	defer cc.Close()
	var mu sync.Mutex // serialises applies with each other
	apply := func(_ context.Context, u meshstream.Update) error {
		mu.Lock()
		defer mu.Unlock()
		snap, err := Snapshot(u.Resources, u.SystemVersion)
		if err != nil {
			log.Warn("mesh config refused; keeping the last one", "version", u.SystemVersion, "error", err.Error())
			return err
		}
		store.Set(snap)
		return nil
	}
	client, err := meshstream.NewClient(cc, cfg.Node, apply, meshstream.ClientOptions{
		CallOptions: []grpc.CallOption{grpc.PerRPCCredentials(tokenFile(cfg.TokenFile))},
	}, log)
	if err != nil {
		return fmt.Errorf("run mesh config client: %w", err)
	}
	return client.Run(ctx)
}

// tokenFile is per-RPC credentials reading a bearer token from a file on
// every call.
type tokenFile string

func (f tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("read token %s: %w", string(f), err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("read token %s: empty", string(f))
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }
