package spiffe

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// DefaultTrustDomain is the trust domain of a mesh installed with defaults.
const DefaultTrustDomain = "cluster.local"

// ErrInvalidID is wrapped by every error about a string or certificate that
// does not hold a valid weft SPIFFE ID.
var ErrInvalidID = errors.New("invalid SPIFFE ID")

// ID is a workload identity. The zero ID means "no identity" (a plaintext
// peer). IDs are comparable and usable as map keys.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// NewID returns the ID of ServiceAccount sa in namespace ns of trust domain
// td, or an error if any part is not a valid path segment.
func NewID(td, ns, sa string) (ID, error) {
	id := ID{TrustDomain: td, Namespace: ns, ServiceAccount: sa}
	if err := id.validate(); err != nil {
		return ID{}, err
	}
	return id, nil
}

// IsZero reports whether id is the zero ID (no identity).
func (id ID) IsZero() bool { return id == ID{} }

// String returns the URI form, spiffe://td/ns/<ns>/sa/<sa>; "" for the zero
// ID.
func (id ID) String() string {
	if id.IsZero() {
		return ""
	}
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the URI form as a URL, for a certificate's URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

func (id ID) validate() error {
	if err := checkSegment("trust domain", id.TrustDomain); err != nil {
		return err
	}
	if strings.ContainsAny(id.TrustDomain, ":@") {
		return fmt.Errorf("%w: trust domain %q has a port or user info", ErrInvalidID, id.TrustDomain)
	}
	if err := checkSegment("namespace", id.Namespace); err != nil {
		return err
	}
	return checkSegment("service account", id.ServiceAccount)
}

// checkSegment accepts the characters of Kubernetes names and DNS labels
// (lowercase letters, digits, '-', '.', '_'), which is what the SPIFFE spec
// allows in path segments and trust domains less '%'-escapes.
func checkSegment(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidID, what)
	}
	if len(s) > 253 {
		return fmt.Errorf("%w: %s longer than 253 bytes", ErrInvalidID, what)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("%w: %s %q is a relative path segment", ErrInvalidID, what, s)
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
		default:
			return fmt.Errorf("%w: %s %q contains %q", ErrInvalidID, what, s, r)
		}
	}
	return nil
}

// ParseID parses spiffe://td/ns/<ns>/sa/<sa>. Other SPIFFE path shapes, query
// strings, fragments, ports and upper-case letters are refused.
func ParseID(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("%w: %q does not start with spiffe://", ErrInvalidID, s)
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("%w: %q has no path", ErrInvalidID, s)
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return ID{}, fmt.Errorf("%w: %q is not spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>", ErrInvalidID, s)
	}
	id := ID{TrustDomain: td, Namespace: parts[1], ServiceAccount: parts[3]}
	if err := id.validate(); err != nil {
		return ID{}, fmt.Errorf("parse %q: %w", s, err)
	}
	return id, nil
}

// FromCertificate returns the ID in cert's URI SANs. A certificate must
// carry exactly one spiffe:// URI SAN (the X.509-SVID rule), else the error
// wraps ErrInvalidID.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return ID{}, fmt.Errorf("%w: certificate %q has no spiffe URI SAN", ErrInvalidID, cert.Subject)
	case 1:
		return ParseID(found[0].String())
	default:
		return ID{}, fmt.Errorf("%w: certificate %q has %d spiffe URI SANs, want 1", ErrInvalidID, cert.Subject, len(found))
	}
}
