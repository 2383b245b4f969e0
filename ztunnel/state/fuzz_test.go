package state

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/weftmesh/weft/internal/spiffe"
)

// FuzzParse: no input makes Parse panic, and whatever Parse accepts encodes
// to JSON that Parse accepts again as an equal Snapshot, on which the
// decisions run without panicking.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(validDoc))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			if s != nil {
				t.Fatalf("Parse() = %+v, %v; want nil with an error", s, err)
			}
			return
		}
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("encode accepted snapshot: %v", err)
		}
		s2, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(encoded accepted snapshot) = %v\ninput:   %q\nencoded: %s", err, b, enc)
		}
		enc2, err := json.Marshal(s2)
		if err != nil {
			t.Fatal(err)
		}
		if string(enc) != string(enc2) {
			t.Fatalf("re-encoded snapshot differs:\n got %s\nwant %s", enc2, enc)
		}
		if got, want := normalize(s2), normalize(s); !reflect.DeepEqual(got, want) {
			t.Fatalf("re-parsed snapshot = %+v, want %+v", got, want)
		}
		exercise(t, s)
	})
}

// exercise runs the lookups and decisions over the addresses and
// identities s mentions; they must agree with its content.
func exercise(t *testing.T, s *Snapshot) {
	var b Balancer
	for i := range s.Workloads {
		w := &s.Workloads[i]
		if got := s.WorkloadByUID(w.UID); got != w {
			t.Fatalf("WorkloadByUID(%q) = %p, want %p", w.UID, got, w)
		}
		for _, a := range w.IPs {
			if got := s.WorkloadByIP(a); got != w {
				t.Fatalf("WorkloadByIP(%v) = %p, want workload %d", a, got, i)
			}
			r, err := s.Resolve(netip.AddrPortFrom(a, 80))
			if err != nil || len(r.Candidates) != 1 || r.Candidates[0].Workload != w {
				t.Fatalf("Resolve(%v:80) = %+v, %v; want workload %d", a, r, err, i)
			}
		}
		s.Authorize(spiffe.ID{}, w, 80)
		for _, p := range s.Policies {
			for _, src := range p.Sources {
				id, _ := spiffe.ParseID(src)
				s.Authorize(id, w, 80)
			}
		}
	}
	for _, svc := range s.Services {
		for _, vip := range svc.VIPs {
			for _, p := range svc.Ports {
				r, err := s.Resolve(netip.AddrPortFrom(vip, p.Port))
				if err != nil || r.Service == nil {
					t.Fatalf("Resolve(%v:%d) = %+v, %v; want a service", vip, p.Port, r, err)
				}
				b.Pick(r, nil)
			}
			s.Resolve(netip.AddrPortFrom(vip, 1))
		}
	}
	s.TrustedRoots()
}

// normalize returns a copy of s without its index and with empty slices and
// maps as nil: JSON omits both alike.
func normalize(s *Snapshot) Snapshot {
	c := *s
	c.idx = nil
	v := reflect.ValueOf(&c).Elem()
	nilEmpty(v)
	return c
}

func nilEmpty(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				nilEmpty(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		// Copy, so that normalising does not write into s.
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(c, v)
		for i := range c.Len() {
			nilEmpty(c.Index(i))
		}
		v.Set(c)
	case reflect.Map:
		if v.Len() == 0 {
			v.SetZero()
		}
	}
}
