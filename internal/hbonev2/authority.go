package hbonev2

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrBadAuthority is wrapped by the errors of ParseAuthority and by
// Pool.Connect for a target it cannot put into :authority.
var ErrBadAuthority = errors.New("not an ip:port authority")

// maxAuthorityLen is longer than any IPv6 literal with brackets and port
// ("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535" is 54 bytes);
// longer input is rejected before any parsing.
const maxAuthorityLen = 64

// ParseAuthority parses the :authority of an HBONE CONNECT: an IPv4 literal
// or a bracketed IPv6 literal, a colon and a decimal port 1..65535 without
// leading zeros. Names, zones, userinfo, a missing or empty port and
// surrounding space are rejected, because the authority is the original
// destination the client's app dialled, and anything else would have to be
// resolved or guessed at on the server.
func ParseAuthority(s string) (netip.AddrPort, error) {
	ap, err := parseAuthority(s)
	if err != nil {
		if len(s) > maxAuthorityLen {
			s = s[:maxAuthorityLen] + "..."
		}
		return netip.AddrPort{}, fmt.Errorf("parse authority %q: %w", s, err)
	}
	return ap, nil
}

func parseAuthority(s string) (netip.AddrPort, error) {
	if len(s) > maxAuthorityLen {
		return netip.AddrPort{}, fmt.Errorf("%w: too long", ErrBadAuthority)
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: no port", ErrBadAuthority)
	}
	host, portText := s[:i], s[i+1:]
	port, err := parsePort(portText)
	if err != nil {
		return netip.AddrPort{}, err
	}
	bracketed := strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]")
	if bracketed {
		host = host[1 : len(host)-1]
	}
	if strings.IndexByte(host, '%') >= 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: zones are not allowed", ErrBadAuthority)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: host is not an IP literal", ErrBadAuthority)
	}
	if addr.Is4() == bracketed {
		// IPv6 needs brackets (the port would be ambiguous), IPv4 must not
		// have them (RFC 3986 allows brackets only around IPv6).
		return netip.AddrPort{}, fmt.Errorf("%w: brackets must enclose exactly the IPv6 literals", ErrBadAuthority)
	}
	return netip.AddrPortFrom(addr, port), nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || (s[0] == '0') {
		return 0, fmt.Errorf("%w: port must be 1..65535 without leading zeros", ErrBadAuthority)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: port is not a decimal number", ErrBadAuthority)
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, fmt.Errorf("%w: port must be 1..65535", ErrBadAuthority)
	}
	return uint16(n), nil
}

// formatAuthority is the inverse of ParseAuthority for the targets Connect
// accepts.
func formatAuthority(ap netip.AddrPort) (string, error) {
	if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return "", fmt.Errorf("format authority %v: %w", ap, ErrBadAuthority)
	}
	return ap.String(), nil
}
