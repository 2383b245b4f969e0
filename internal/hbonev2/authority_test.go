package hbonev2

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" means an error is expected
	}{
		{name: "ipv4", in: "10.1.2.3:8080", want: "10.1.2.3:8080"},
		{name: "ipv4 max port", in: "192.168.0.1:65535", want: "192.168.0.1:65535"},
		{name: "ipv6", in: "[fd00::1]:443", want: "[fd00::1]:443"},
		{name: "ipv6 uppercase", in: "[FD00::A]:1", want: "[fd00::a]:1"},
		{name: "ipv4-mapped ipv6 stays ipv6", in: "[::ffff:10.0.0.1]:80", want: "[::ffff:10.0.0.1]:80"},
		{name: "name", in: "example.com:80"},
		{name: "localhost", in: "localhost:80"},
		{name: "no port", in: "10.1.2.3"},
		{name: "empty port", in: "10.1.2.3:"},
		{name: "port zero", in: "10.1.2.3:0"},
		{name: "port too big", in: "10.1.2.3:65536"},
		{name: "port leading zero", in: "10.1.2.3:080"},
		{name: "port sign", in: "10.1.2.3:+80"},
		{name: "port hex", in: "10.1.2.3:0x50"},
		{name: "ipv6 without brackets", in: "fd00::1:443"},
		{name: "ipv4 in brackets", in: "[10.1.2.3]:80"},
		{name: "zone", in: "[fe80::1%eth0]:80"},
		{name: "escaped zone", in: "[fe80::1%25eth0]:80"},
		{name: "userinfo", in: "user@10.1.2.3:80"},
		{name: "leading space", in: " 10.1.2.3:80"},
		{name: "trailing space", in: "10.1.2.3:80 "},
		{name: "octet leading zero", in: "010.1.2.3:80"},
		{name: "empty", in: ""},
		{name: "only colon", in: ":"},
		{name: "only port", in: ":80"},
		{name: "path", in: "10.1.2.3:80/x"},
		{name: "long", in: strings.Repeat("1", 100) + ":80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthority(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ParseAuthority(%q) = %v, want an error", tt.in, got)
				}
				if !errors.Is(err, ErrBadAuthority) {
					t.Errorf("ParseAuthority(%q) error %v does not wrap ErrBadAuthority", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAuthority(%q) = %v, want %s", tt.in, err, tt.want)
			}
			if got.String() != tt.want {
				t.Errorf("ParseAuthority(%q) = %v, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParseAuthority checks that nothing panics and that whatever parses is
// a usable destination that formats back to itself.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.1.2.3:8080", "[fd00::1]:443", "[::ffff:1.2.3.4]:1", "a:1", "[fe80::1%x]:1", "1.2.3.4:65536"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAuthority(s)
		if err != nil {
			if !errors.Is(err, ErrBadAuthority) {
				t.Fatalf("ParseAuthority(%q) error %v does not wrap ErrBadAuthority", s, err)
			}
			return
		}
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Zone() != "" {
			t.Fatalf("ParseAuthority(%q) = %v, not a usable destination", s, ap)
		}
		formatted, err := formatAuthority(ap)
		if err != nil {
			t.Fatalf("formatAuthority(%v) = %v", ap, err)
		}
		again, err := ParseAuthority(formatted)
		if err != nil || again != ap {
			t.Fatalf("ParseAuthority(%q) = %v, %v; want %v (formatted from %q)", formatted, again, err, ap, s)
		}
		if ap.Addr().Is4() && formatted != s {
			t.Fatalf("IPv4 authority %q parsed to %v, which formats as %q: two spellings of one destination", s, ap, formatted)
		}
		if std, err := netip.ParseAddrPort(s); err != nil || std != ap {
			t.Fatalf("netip.ParseAddrPort(%q) = %v, %v; ParseAuthority accepted it as %v", s, std, err, ap)
		}
	})
}
