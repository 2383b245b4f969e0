package redirect

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// tcx verdicts as Program.Run returns them.
const (
	verdictNext = 0xffffffff // TCX_NEXT (-1): untouched
	verdictPass = 0          // TCX_PASS: assigned to the inbound listener
	verdictDrop = 2          // TCX_DROP
)

type pkt struct {
	v6         bool
	proto      uint8 // default TCP
	src, dst   netip.AddrPort
	flags      uint8 // TCP flags
	fragOffset uint16
	truncate   int // bytes to cut off the end
}

const (
	flagSYN = 0x02
	flagACK = 0x10
	flagRST = 0x04
)

// bytes builds Ethernet + IPv4/IPv6 + TCP (or a UDP-sized stub).
func (p pkt) bytes() []byte {
	b := make([]byte, 0, 128)
	b = append(b, 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2) // dst, src MAC
	proto := p.proto
	if proto == 0 {
		proto = 6
	}
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:], p.src.Port())
	binary.BigEndian.PutUint16(l4[2:], p.dst.Port())
	binary.BigEndian.PutUint32(l4[4:], 1000)
	l4[12] = 5 << 4
	l4[13] = p.flags
	binary.BigEndian.PutUint16(l4[14:], 65535)
	if p.v6 {
		b = binary.BigEndian.AppendUint16(b, 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6] = proto
		ip[7] = 64
		s, d := p.src.Addr().As16(), p.dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[6:], p.fragOffset)
		ip[8] = 64
		ip[9] = proto
		s, d := p.src.Addr().As4(), p.dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		b = append(b, ip...)
	}
	b = append(b, l4...)
	return b[:len(b)-p.truncate]
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// TestIngressProgRun runs the tcx program with BPF_PROG_TEST_RUN over crafted
// packets, inside a throwaway netns whose sockets the lookups see.
func TestIngressProgRun(t *testing.T) {
	requirePrivileged(t)
	ns := newNetNS(t)
	o := mustLoad(t, Options{})
	// SYNs to the pod IP from the probe source pass.
	key, cfg, err := ingressValue(IngressConfig{PodIP: netip.MustParseAddr("10.250.0.2"), ProbeSource: netip.MustParseAddr("10.250.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.objs.IngressCfg.Put(key, &cfg); err != nil {
		t.Fatal(err)
	}

	client, pod := "10.250.0.3:40000", "10.250.0.2:8080"
	probePass := func(c Counters) uint64 { return c.ProbePass }
	dropped := func(c Counters) uint64 { return c.InboundDropNoListener }
	failed := func(c Counters) uint64 { return c.Errors }
	tests := []struct {
		name  string
		pkt   pkt
		want  uint32
		count func(Counters) uint64 // counter that must grow by one, if any
		// listen, if set, is a listener opened in ns before this case
		// (and kept for the following cases).
		listen string
		// established, if set, first connects pkt.src to pkt.dst, so
		// the SYN belongs to an existing socket.
		established bool
	}{
		{name: "ack passes", pkt: pkt{src: ap(client), dst: ap(pod), flags: flagACK}, want: verdictNext},
		{name: "syn-ack passes", pkt: pkt{src: ap(client), dst: ap(pod), flags: flagSYN | flagACK}, want: verdictNext},
		{name: "rst passes", pkt: pkt{src: ap(client), dst: ap(pod), flags: flagRST}, want: verdictNext},
		{name: "syn to hbone passes", pkt: pkt{src: ap(client), dst: ap("10.250.0.2:15008"), flags: flagSYN}, want: verdictNext},
		{name: "syn from probe source passes", pkt: pkt{src: ap("10.250.0.1:40000"), dst: ap(pod), flags: flagSYN}, want: verdictNext, count: probePass},
		{name: "udp passes", pkt: pkt{proto: 17, src: ap(client), dst: ap("10.250.0.2:53"), flags: flagSYN}, want: verdictNext},
		{name: "ipv6 syn passes", pkt: pkt{v6: true, src: ap("[fd00::3]:40000"), dst: ap("[fd00::2]:8080"), flags: flagSYN}, want: verdictNext},
		{name: "non-first fragment passes", pkt: pkt{src: ap(client), dst: ap(pod), flags: flagSYN, fragOffset: 100}, want: verdictNext},
		{name: "truncated tcp header passes", pkt: pkt{src: ap(client), dst: ap(pod), flags: flagSYN, truncate: 8}, want: verdictNext},
		{name: "syn without inbound listener drops", pkt: pkt{src: ap(client), dst: ap(pod), flags: flagSYN}, want: verdictDrop, count: dropped},
		{name: "probe source exemption is per pod IP", pkt: pkt{src: ap("10.250.0.1:40000"), dst: ap("10.250.0.9:8080"), flags: flagSYN}, want: verdictDrop, count: dropped},
		{name: "syn to the app's listener without inbound listener drops", pkt: pkt{src: ap(client), dst: ap("127.0.0.1:8081"), flags: flagSYN}, want: verdictDrop, count: dropped},
		// With a listener the program reaches bpf_sk_assign, which the
		// kernel refuses outside tc ingress (as in a test run): that is the
		// assignment-failure path, which must drop too. Real assignment is
		// covered by TestInbound.
		{name: "failed sk_assign drops", pkt: pkt{src: ap(client), dst: ap("127.0.0.1:8082"), flags: flagSYN}, want: verdictDrop, count: failed, listen: "127.0.0.1:15006"},
		{name: "syn of an existing connection passes", pkt: pkt{src: ap("127.0.0.1:40001"), dst: ap("127.0.0.1:8081"), flags: flagSYN}, want: verdictNext, established: true},
	}
	serve(t, ns, "tcp4", "127.0.0.1:8081", fixed("app"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.listen != "" {
				serve(t, ns, "tcp4", tt.listen, fixed("listener"))
			}
			if tt.established {
				mustDialFrom(t, ns, tt.pkt.src, tt.pkt.dst)
			}
			before := mustCounters(t, o)
			var got uint32
			ns.do(t, func() error {
				var err error
				got, err = o.objs.WeftIngress.Run(&ebpf.RunOptions{Data: tt.pkt.bytes()})
				return err
			})
			if got != tt.want {
				t.Errorf("Run(%s) = %#x, want %#x", tt.name, got, tt.want)
			}
			after := mustCounters(t, o)
			d := after.diff(before)
			if tt.count != nil {
				if n := tt.count(d); n != 1 {
					t.Errorf("counter delta = %d, want 1 (all deltas %+v)", n, d)
				}
			} else if d != (Counters{}) {
				t.Errorf("counters changed: %+v, want no change", d)
			}
		})
	}
}
