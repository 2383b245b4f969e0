package identity

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
)

// SetExtraRoots replaces the roots added to the RootSource's: the trust
// bundle from the config stream. A CA rotation adds the new root here
// before anything is signed with it. pemData holds zero or more PEM CA
// certificates; on error the previous extra roots stay.
func (m *Manager) SetExtraRoots(pemData []byte) error {
	var certs []*x509.Certificate
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("set extra roots: PEM block %d is %q, want CERTIFICATE", len(certs), block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("set extra roots: parse certificate %d: %w", len(certs), err)
		}
		// A leaf as a trust anchor would authenticate whoever holds its key
		// as any identity it names; only CAs anchor the bundle.
		if !c.IsCA || !c.BasicConstraintsValid {
			return fmt.Errorf("set extra roots: certificate %d (%q) is not a CA", len(certs), c.Subject)
		}
		certs = append(certs, c)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// The config stream resends the bundle with other changes; rebuild
	// (and log) only when it differs.
	if slices.EqualFunc(certs, m.extraRoots, (*x509.Certificate).Equal) {
		return nil
	}
	m.extraRoots = certs
	m.rebuildRootsLocked()
	return nil
}

// Roots returns the current trust bundle: the RootSource's roots and the
// extra roots. It is a copy; changing it changes nothing in the Manager.
func (m *Manager) Roots() *x509.CertPool {
	return m.bundle().Clone()
}

// bundle returns the current trust bundle, reading the RootSource first if
// it has never been read, so the bundle is complete before Run starts.
func (m *Manager) bundle() *x509.CertPool {
	if !m.sourceRead.Load() {
		m.refreshRoots()
	}
	return m.roots.Load()
}

// refreshRoots reads the RootSource and rebuilds the bundle if it changed.
// On error the previous roots stay: a node keeps serving with what it had.
func (m *Manager) refreshRoots() {
	if m.source == nil {
		m.sourceRead.Store(true)
		return
	}
	roots, err := m.source.Roots()
	if err != nil {
		m.log.Warn("read trust bundle; keeping the current one", "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sourceRead.Store(true)
	if slices.EqualFunc(roots, m.sourceRoots, (*x509.Certificate).Equal) {
		return
	}
	m.sourceRoots = roots
	m.rebuildRootsLocked()
}

// rebuildRootsLocked publishes a new pool of sourceRoots and extraRoots.
// m.mu must be held.
func (m *Manager) rebuildRootsLocked() {
	p := x509.NewCertPool()
	var subjects []string
	for _, c := range slices.Concat(m.sourceRoots, m.extraRoots) {
		p.AddCert(c)
		subjects = append(subjects, c.Subject.String())
	}
	m.roots.Store(p)
	m.log.Info("trust bundle changed", "roots", subjects)
}
