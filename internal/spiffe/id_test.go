package spiffe

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
)

func TestParseID(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ID
		wantErr bool
	}{
		{name: "valid", in: "spiffe://cluster.local/ns/shop/sa/cart", want: ID{"cluster.local", "shop", "cart"}},
		{name: "dots and dashes", in: "spiffe://td.example/ns/a-b.c/sa/x_y", want: ID{"td.example", "a-b.c", "x_y"}},
		{name: "no scheme", in: "cluster.local/ns/shop/sa/cart", wantErr: true},
		{name: "http scheme", in: "http://cluster.local/ns/shop/sa/cart", wantErr: true},
		{name: "no path", in: "spiffe://cluster.local", wantErr: true},
		{name: "other shape", in: "spiffe://cluster.local/workload/x", wantErr: true},
		{name: "extra segment", in: "spiffe://cluster.local/ns/shop/sa/cart/x", wantErr: true},
		{name: "empty namespace", in: "spiffe://cluster.local/ns//sa/cart", wantErr: true},
		{name: "upper case", in: "spiffe://cluster.local/ns/Shop/sa/cart", wantErr: true},
		{name: "port", in: "spiffe://cluster.local:443/ns/shop/sa/cart", wantErr: true},
		{name: "query", in: "spiffe://cluster.local/ns/shop/sa/cart?x=1", wantErr: true},
		{name: "dot segment", in: "spiffe://cluster.local/ns/../sa/cart", wantErr: true},
		{name: "percent escape", in: "spiffe://cluster.local/ns/sh%6fp/sa/cart", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseID(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidID) {
					t.Fatalf("ParseID(%q) = %v, %v; want an ErrInvalidID", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseID(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in || got.URL().String() != tt.in {
				t.Errorf("String/URL = %q/%q, want %q", got.String(), got.URL(), tt.in)
			}
		})
	}
}

func TestFromCertificateNeedsExactlyOneSPIFFEURI(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	tests := []struct {
		name    string
		uris    []*url.URL
		wantErr bool
	}{
		{name: "one", uris: []*url.URL{u("spiffe://cluster.local/ns/a/sa/b")}},
		{name: "one plus https", uris: []*url.URL{u("https://example"), u("spiffe://cluster.local/ns/a/sa/b")}},
		{name: "none", wantErr: true},
		{name: "two", uris: []*url.URL{u("spiffe://cluster.local/ns/a/sa/b"), u("spiffe://cluster.local/ns/a/sa/c")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromCertificate(&x509.Certificate{URIs: tt.uris})
			if (err != nil) != tt.wantErr {
				t.Fatalf("FromCertificate(%v) error = %v, wantErr %v", tt.uris, err, tt.wantErr)
			}
		})
	}
}

func FuzzParseID(f *testing.F) {
	f.Add("spiffe://cluster.local/ns/shop/sa/cart")
	f.Add("spiffe://x/ns/y/sa/z")
	f.Add("spiffe:///ns//sa/")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("ParseID(%q) accepted a non-canonical form: %q", s, id.String())
		}
		if again, err := ParseID(id.String()); err != nil || again != id {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}
