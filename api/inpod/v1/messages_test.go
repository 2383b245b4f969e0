package inpodv1

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var testWorkload = Workload{
	UID:            "6c0f2d1e-1b7a-4f4e-9a51-0d2c3b4a5e6f",
	Namespace:      "shop",
	Name:           "cart-7d9f",
	ServiceAccount: "cart",
	Node:           "node-1",
	IPs:            []netip.Addr{netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("fd00::7")},
	NetnsCookie:    4099,
}

func TestEncodeDecode(t *testing.T) {
	tests := map[string]struct {
		msg  Message
		want string
	}{
		"hello": {
			msg:  Hello{Version: 1},
			want: `{"type":"hello","version":1}`,
		},
		"addWorkload": {
			msg: AddWorkload{Workload: testWorkload},
			want: `{"type":"addWorkload","workload":{"uid":"6c0f2d1e-1b7a-4f4e-9a51-0d2c3b4a5e6f",` +
				`"namespace":"shop","name":"cart-7d9f","serviceAccount":"cart","node":"node-1",` +
				`"ips":["10.244.1.7","fd00::7"],"netnsCookie":4099}}`,
		},
		"addWorkload minimal": {
			msg:  AddWorkload{Workload: Workload{UID: "u1"}},
			want: `{"type":"addWorkload","workload":{"uid":"u1"}}`,
		},
		"addWorkload max cookie": {
			msg:  AddWorkload{Workload: Workload{UID: "u1", NetnsCookie: 1<<64 - 1}},
			want: `{"type":"addWorkload","workload":{"uid":"u1","netnsCookie":18446744073709551615}}`,
		},
		"snapshotSent": {
			msg:  SnapshotSent{},
			want: `{"type":"snapshotSent"}`,
		},
		"removeWorkload drain": {
			msg:  RemoveWorkload{UID: "u1", Drain: true},
			want: `{"type":"removeWorkload","uid":"u1","drain":true}`,
		},
		"removeWorkload delete": {
			msg:  RemoveWorkload{UID: "u1"},
			want: `{"type":"removeWorkload","uid":"u1"}`,
		},
		"ack": {
			msg:  Ack{},
			want: `{"type":"ack"}`,
		},
		"ack error": {
			msg:  Ack{Error: "open listeners: <address in use> & more"},
			want: `{"type":"ack","error":"open listeners: <address in use> & more"}`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := Encode(tt.msg)
			if err != nil {
				t.Fatalf("Encode(%#v): %v", tt.msg, err)
			}
			if string(b) != tt.want {
				t.Errorf("Encode(%#v) = %s, want %s", tt.msg, b, tt.want)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.msg) {
				t.Errorf("Decode(%s) = %#v, want %#v", b, got, tt.msg)
			}
		})
	}
}

func TestDecodeIgnoresUnknownMembers(t *testing.T) {
	got, err := Decode([]byte(`{"version":1,"type":"hello","future":{"x":[1,2]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Hello{Version: 1}); got != Message(want) {
		t.Errorf("Decode = %#v, want %#v", got, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := map[string]struct {
		in      string
		wantErr error
		wantMsg string
	}{
		"empty":             {in: ``, wantErr: ErrMalformed},
		"not json":          {in: `hello`, wantErr: ErrMalformed},
		"json array":        {in: `[1]`, wantErr: ErrMalformed},
		"json null":         {in: `null`, wantErr: ErrMalformed, wantMsg: "no type"},
		"no type":           {in: `{"version":1}`, wantErr: ErrMalformed, wantMsg: "no type"},
		"type not string":   {in: `{"type":1}`, wantErr: ErrMalformed},
		"unknown type":      {in: `{"type":"addPod"}`, wantErr: ErrMalformed, wantMsg: `unknown type "addPod"`},
		"trailing data":     {in: `{"type":"ack"}{"type":"ack"}`, wantErr: ErrMalformed},
		"truncated":         {in: `{"type":"ack"`, wantErr: ErrMalformed},
		"hello no version":  {in: `{"type":"hello"}`, wantErr: ErrMalformed, wantMsg: "version 0"},
		"hello version str": {in: `{"type":"hello","version":"1"}`, wantErr: ErrMalformed},
		"hello negative":    {in: `{"type":"hello","version":-1}`, wantErr: ErrMalformed},
		"add no workload":   {in: `{"type":"addWorkload"}`, wantErr: ErrMalformed, wantMsg: "empty workload uid"},
		"add bad ip":        {in: `{"type":"addWorkload","workload":{"uid":"u","ips":["10.0.0.300"]}}`, wantErr: ErrMalformed},
		"add empty ip":      {in: `{"type":"addWorkload","workload":{"uid":"u","ips":[""]}}`, wantErr: ErrMalformed, wantMsg: "invalid ip"},
		"add null ip":       {in: `{"type":"addWorkload","workload":{"uid":"u","ips":[null]}}`, wantErr: ErrMalformed, wantMsg: "invalid ip"},
		"add neg cookie":    {in: `{"type":"addWorkload","workload":{"uid":"u","netnsCookie":-1}}`, wantErr: ErrMalformed},
		"remove no uid":     {in: `{"type":"removeWorkload","drain":true}`, wantErr: ErrMalformed, wantMsg: "empty uid"},
		"ack error number":  {in: `{"type":"ack","error":5}`, wantErr: ErrMalformed},
		"type case":         {in: `{"Type":"ack"}`, wantErr: ErrMalformed, wantMsg: `member "Type", want "type"`},
		"duplicate type":    {in: `{"type":"ack","type":"hello","version":1}`, wantErr: ErrMalformed, wantMsg: `duplicate member "type"`},
		"workload key case": {in: `{"type":"addWorkload","workload":{"uid":"u","UID":"v"}}`, wantErr: ErrMalformed, wantMsg: `workload: member "UID"`},
		"workload dup key":  {in: `{"type":"addWorkload","workload":{"uid":"u","uid":"v"}}`, wantErr: ErrMalformed, wantMsg: "duplicate"},
		"oversize":          {in: `{"type":"ack","error":"` + strings.Repeat("x", MaxMessageSize) + `"}`, wantErr: ErrTooLarge},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, err := Decode([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode(%.80q) = %#v, %v; want error %v", tt.in, m, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Decode(%.80q) error %q, want it to contain %q", tt.in, err, tt.wantMsg)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := map[string]struct {
		msg     Message
		wantErr error
	}{
		"hello version 0": {msg: Hello{}, wantErr: ErrMalformed},
		"add no uid":      {msg: AddWorkload{}, wantErr: ErrMalformed},
		"add zero ip":     {msg: AddWorkload{Workload: Workload{UID: "u", IPs: []netip.Addr{{}}}}, wantErr: ErrMalformed},
		"remove no uid":   {msg: RemoveWorkload{Drain: true}, wantErr: ErrMalformed},
		"oversize":        {msg: Ack{Error: strings.Repeat("x", MaxMessageSize)}, wantErr: ErrTooLarge},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := Encode(tt.msg)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Encode(%.80v) = %.80s, %v; want error %v", tt.msg, b, err, tt.wantErr)
			}
		})
	}
	if _, err := Encode(nil); err == nil {
		t.Error("Encode(nil) = nil error, want one")
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		Hello{Version: Version},
		AddWorkload{Workload: testWorkload},
		SnapshotSent{},
		RemoveWorkload{UID: "u1", Drain: true},
		Ack{Error: "refused"},
	} {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"type":"addWorkload","workload":{"uid":"u","ips":["fe80::1%eth0"]}}`))
	f.Add([]byte(`{"type":"hello","version":1e3}`))
	f.Add([]byte(`{"type":"ack","type":"hello","version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decode(%q) error %v wraps neither ErrMalformed nor ErrTooLarge", b, err)
			}
			if m != nil {
				t.Fatalf("Decode(%q) = %#v with error %v, want nil message", b, m, err)
			}
			return
		}
		// A decoded message re-encodes (unless escaping grew it past the
		// limit) to a packet that decodes to the same message.
		b2, err := Encode(m)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("Encode(Decode(%q) = %#v): %v", b, m, err)
		}
		m2, err := Decode(b2)
		if err != nil {
			t.Fatalf("Decode(Encode(%#v) = %s): %v", m, b2, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("Decode(Encode(m)) = %#v, want m = %#v", m2, m)
		}
	})
}
