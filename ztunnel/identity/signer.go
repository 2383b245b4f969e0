package identity

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/pki"
	"github.com/weftmesh/weft/internal/spiffe"
)

// Signer signs a CSR for id and returns the PEM chain, leaf first. It is
// the file CA now (FileSigner) and the operator's gRPC client later.
// Implementations must be safe for concurrent use.
type Signer interface {
	Sign(ctx context.Context, csrPEM []byte, id spiffe.ID) ([]byte, error)
}

// RootSource yields the roots that certificates from the Signer chain to,
// for the trust bundle. The Manager reads it every Options.Poll and before
// checking a new certificate, so a source that changes (a CA directory
// being rotated) is followed without a restart. Its roots are merged with
// those of Manager.SetExtraRoots. Implementations must be safe for
// concurrent use.
type RootSource interface {
	Roots() ([]*x509.Certificate, error)
}

// caFileNames are the files pki.LoadCADir may read, in a fixed order: their
// contents tell whether the directory changed.
var caFileNames = []string{pki.TLSCertFile, pki.TLSKeyFile, pki.CACertFile, pki.CAKeyFile}

// FileSigner signs with the CA in a directory (pki.LoadCADir: weft's
// ca.crt/ca.key or cert-manager's tls.crt/tls.key/ca.crt), re-reading it
// whenever its files change, so rotating the Secret rotates the CA. It is
// also the RootSource for the CA's roots. It is safe for concurrent use.
//
// This is weft's interim and test mode: every node holds the CA key.
type FileSigner struct {
	dir      string
	lifetime time.Duration

	// mu guards the fields below.
	mu sync.Mutex
	// seen is the concatenated contents of the directory's CA files when
	// ca was loaded; ca is nil until the first successful load.
	seen []byte
	ca   *pki.CA
}

// NewFileSigner returns a FileSigner for the CA in dir, issuing certificates
// valid for lifetime (positive; ARCHITECTURE.md §4 says 24h). The directory
// is read on first use, not here, so ztunnel can start before the Secret is
// mounted.
func NewFileSigner(dir string, lifetime time.Duration) *FileSigner {
	return &FileSigner{dir: dir, lifetime: lifetime}
}

// Sign implements Signer.
func (s *FileSigner) Sign(ctx context.Context, csrPEM []byte, id spiffe.ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sign %s with the file CA: %w", id, err)
	}
	ca, err := s.current()
	if err != nil {
		return nil, fmt.Errorf("sign %s with the file CA: %w", id, err)
	}
	return ca.SignCSR(csrPEM, id, s.lifetime, time.Now())
}

// Roots implements RootSource: the root of the directory's CA and the extra
// roots of its bundle (cert-manager's ca.crt).
func (s *FileSigner) Roots() ([]*x509.Certificate, error) {
	ca, err := s.current()
	if err != nil {
		return nil, fmt.Errorf("read file CA roots: %w", err)
	}
	return ca.Roots(), nil
}

// current returns the directory's CA, loading it again if any of its files
// changed. A directory that does not load (a Secret swap read half-way, a
// missing file) is an error even if an older CA is cached: signing with a
// CA the operator replaced would be wrong, and the caller retries.
func (s *FileSigner) current() (*pki.CA, error) {
	var seen []byte
	for _, name := range caFileNames {
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		// The length prefix keeps ("ab","") and ("a","b") apart.
		seen = fmt.Appendf(seen, "%s %d\n", name, len(data))
		seen = append(seen, data...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ca != nil && bytes.Equal(seen, s.seen) {
		return s.ca, nil
	}
	ca, err := pki.LoadCADir(s.dir)
	if err != nil {
		return nil, err
	}
	s.ca, s.seen = ca, seen
	return ca, nil
}
