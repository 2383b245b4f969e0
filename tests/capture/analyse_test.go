package capture

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestAssemble(t *testing.T) {
	tests := []struct {
		name string
		segs []segment
		want []string
	}{
		{"in order", []segment{{100, []byte("ab")}, {102, []byte("cd")}}, []string{"abcd"}},
		{"reordered", []segment{{102, []byte("cd")}, {100, []byte("ab")}, {104, []byte("e")}}, []string{"abcde"}},
		{"retransmitted", []segment{{100, []byte("ab")}, {100, []byte("ab")}, {102, []byte("cd")}}, []string{"abcd"}},
		{"overlapping", []segment{{100, []byte("abc")}, {101, []byte("bcde")}}, []string{"abcde"}},
		{"contained", []segment{{100, []byte("abcd")}, {101, []byte("bc")}}, []string{"abcd"}},
		{"gap", []segment{{100, []byte("ab")}, {110, []byte("xy")}}, []string{"ab", "xy"}},
		{"sequence wraps", []segment{{0xfffffffe, []byte("ab")}, {0, []byte("cd")}}, []string{"abcd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, r := range assemble(tt.segs) {
				got = append(got, string(r))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("assemble = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseTCPAndTLS(t *testing.T) {
	// tshark -T fields output: stream, ip.src, ipv6.src, ip.dst, ipv6.dst,
	// srcport, dstport, seq_raw, payload.
	tcp := strings.Join([]string{
		"0\t10.0.0.1\t\t10.0.0.2\t\t40000\t80\t1000\t",
		"0\t10.0.0.1\t\t10.0.0.2\t\t40000\t80\t1001\t6865",
		"0\t10.0.0.1\t\t10.0.0.2\t\t40000\t80\t1003\t6c6c6f",
		"0\t10.0.0.2\t\t10.0.0.1\t\t80\t40000\t5000\t6f6b",
		"1\t\tfd00::1\t\tfd00::2\t40001\t80\t7\t78",
		"2\t192.0.2.1,10.0.0.1\t\t192.0.2.2,10.0.0.2\t\t40002\t80\t1\t79",
	}, "\n") + "\n"
	flows, err := parseTCP([]byte(tcp))
	if err != nil {
		t.Fatal(err)
	}
	r := &Result{flows: flows}
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if got := r.TCPBytes(a, b, 80); got != 6 {
		t.Errorf("TCPBytes(a→b:80) = %d, want 6 (\"hello\" and the tunnelled \"y\")", got)
	}
	if got := r.TCPBytes(b, a, 40000); got != 2 {
		t.Errorf("TCPBytes(b→a:40000) = %d, want 2", got)
	}
	if got := r.TCPBytes(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), 80); got != 1 {
		t.Errorf("TCPBytes over IPv6 = %d, want 1", got)
	}
	if !r.Contains([]byte("hello")) || r.Contains([]byte("helo")) {
		t.Errorf("Contains(hello), Contains(helo) = %v, %v; want true, false", r.Contains([]byte("hello")), r.Contains([]byte("helo")))
	}
	if _, err := parseTCP([]byte("0\t10.0.0.1\n")); err == nil {
		t.Errorf("parseTCP(short line) succeeded, want an error")
	}

	// ip.src, ipv6.src, ip.dst, ipv6.dst, tls.record.length (aggregated).
	tlsOut := "10.0.0.1\t\t10.0.0.2\t\t512\n10.0.0.2\t\t10.0.0.1\t\t100,27\n10.0.0.3\t\t10.0.0.2\t\t9\n"
	recs, err := parseTLS([]byte(tlsOut))
	if err != nil {
		t.Fatal(err)
	}
	r = &Result{tls: map[uint16][]tlsRecord{443: recs}}
	if got, want := r.TLSBytes(a, b, 443), int64(517+105+32); got != want {
		t.Errorf("TLSBytes(a, b) = %d, want %d (records with their headers, both directions)", got, want)
	}
}

func TestParsePcap(t *testing.T) {
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		var buf bytes.Buffer
		hdr := make([]byte, 24)
		order.PutUint32(hdr[0:], 0xa1b2c3d4)
		buf.Write(hdr)
		for _, frame := range []string{"first frame", "second"} {
			rec := make([]byte, 16)
			order.PutUint32(rec[8:], uint32(len(frame)))
			order.PutUint32(rec[12:], uint32(len(frame)))
			buf.Write(rec)
			buf.WriteString(frame)
		}
		frames, err := parsePcap(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("%v: %v", order, err)
		}
		if len(frames) != 2 || string(frames[0]) != "first frame" || string(frames[1]) != "second" {
			t.Errorf("%v: parsePcap = %q, want the two frames", order, frames)
		}
		if _, err := parsePcap(bytes.NewReader(buf.Bytes()[:buf.Len()-2])); err == nil {
			t.Errorf("%v: parsePcap(truncated) succeeded, want an error", order)
		}
	}
	if _, err := parsePcap(strings.NewReader(strings.Repeat("x", 24))); err == nil {
		t.Errorf("parsePcap(not pcap) succeeded, want an error")
	}
}

func TestProgress(t *testing.T) {
	p := newProgress()
	for _, chunk := range []string{"Capturing on 'eth0'\nFile: /tmp/x.pcap\n", "\rPackets: 1", "2 \rPack", "ets: 30 ", "\rPackets captured: 31\n",
		"Packets received/dropped on interface 'eth0': 31/0 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0) (100.0%)\n"} {
		p.Write([]byte(chunk))
	}
	select {
	case <-p.started:
	default:
		t.Errorf("started not closed after \"Capturing on\"")
	}
	if got := p.count(); got != 31 {
		t.Errorf("count = %d, want 31", got)
	}
	if got := p.text(); !strings.Contains(got, "File: /tmp/x.pcap") || strings.Contains(got, "Packets: 12") {
		t.Errorf("text = %q, want the messages without the progress counts", got)
	}
}

type fakeCluster struct{}

func (fakeCluster) Nodes() []string              { return []string{"node0", "node1"} }
func (fakeCluster) NodeNetns(node string) string { return "weft-r1a2b3-" + node }

func TestUnderlayNetns(t *testing.T) {
	if got, want := UnderlayNetns(fakeCluster{}), "weft-r1a2b3-ul"; got != want {
		t.Errorf("UnderlayNetns = %q, want %q", got, want)
	}
}
