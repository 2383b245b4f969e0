package state

import (
	"testing"

	"github.com/weftmesh/weft/internal/spiffe"
)

func BenchmarkAuthorize(b *testing.B) {
	s := policySnapshot(b, ModeStrict)
	d, e := s.WorkloadByUID("uid-d"), s.WorkloadByUID("uid-e")
	benches := []struct {
		name string
		src  spiffe.ID
		dst  *Workload
		port uint16
	}{
		{"allowed", sa("x"), d, 9091},
		{"denied", sa("b"), d, 8080},
		{"strict unselected", sa("a"), e, 8080},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Authorize(bb.src, bb.dst, bb.port)
			}
		})
	}
}

func BenchmarkResolve(b *testing.B) {
	s := example(b)
	benches := map[string]string{
		"service vip": "10.96.0.10:443",
		"workload":    "10.1.0.2:7000",
		"passthrough": "93.184.215.14:443",
	}
	for name, dst := range benches {
		b.Run(name, func(b *testing.B) {
			d := ap(dst)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Resolve(d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	s := example(b)
	r := mustResolve(b, s, "10.96.0.10:80")
	var bal Balancer
	b.ReportAllocs()
	for b.Loop() {
		bal.Pick(r, nil)
	}
}
