package capture

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// HBONEPort is weft's HBONE port; tshark always decodes it as TLS here.
const HBONEPort = 15008

// Result is the analysis of one capture. Contains and TCPBytes answer from
// what Stop extracted; TLSBytes runs tshark once per port (and remembers the
// answer). It holds every captured frame in memory, so filter captures to
// the traffic under test. It is safe for concurrent use.
type Result struct {
	// Path is the pcap file; it lives in the test's temp dir.
	Path string
	// Frames is the number of frames in the file.
	Frames int
	// Dropped is the number of packets the kernel dropped because the
	// capture ring was full: a non-zero value means the capture is
	// incomplete.
	Dropped uint64

	tb     testing.TB
	frames [][]byte
	flows  map[flowKey]*flow

	mu  sync.Mutex // guards tls
	tls map[uint16][]tlsRecord
}

// flowKey is one direction of one TCP connection, as tshark numbers them.
type flowKey struct {
	stream   int
	src, dst netip.AddrPort
}

// flow is the payload of one direction: segments as captured, and the byte
// runs they assemble into (a new run starts after a gap in the sequence
// space, which a lost packet leaves).
type flow struct {
	segs []segment
	runs [][]byte
}

type segment struct {
	seq  uint32
	data []byte
}

type tlsRecord struct {
	src, dst netip.Addr
	bytes    int64 // header (5) + length
}

// analyse reads a finished capture file.
func analyse(tb testing.TB, path string, dropped uint64) (*Result, error) {
	frames, err := readPcap(path)
	if err != nil {
		return nil, err
	}
	out, err := tshark(path, 0, "tcp && !icmp && !icmpv6",
		"-E", "occurrence=l",
		"-e", "tcp.stream", "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst",
		"-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.seq_raw", "-e", "tcp.payload")
	if err != nil {
		return nil, err
	}
	flows, err := parseTCP(out)
	if err != nil {
		return nil, err
	}
	return &Result{Path: path, Frames: len(frames), Dropped: dropped, tb: tb, frames: frames, flows: flows, tls: map[uint16][]tlsRecord{}}, nil
}

// Contains reports whether marker appears in any captured frame or in the
// reassembled payload of any TCP direction (so a marker split across
// segments is found too).
func (r *Result) Contains(marker []byte) bool {
	if len(marker) == 0 {
		return true
	}
	for _, f := range r.frames {
		if bytes.Contains(f, marker) {
			return true
		}
	}
	for _, fl := range r.flows {
		for _, run := range fl.runs {
			if bytes.Contains(run, marker) {
				return true
			}
		}
	}
	return false
}

// TCPBytes returns the TCP payload bytes sent from srcIP to dstIP:dstPort,
// over all connections, each byte of the sequence space counted once
// (retransmissions are not counted twice).
func (r *Result) TCPBytes(srcIP, dstIP netip.Addr, dstPort uint16) int64 {
	srcIP, dstIP = srcIP.Unmap(), dstIP.Unmap()
	var n int64
	for k, fl := range r.flows {
		if k.src.Addr() != srcIP || k.dst.Addr() != dstIP || k.dst.Port() != dstPort {
			continue
		}
		for _, run := range fl.runs {
			n += int64(len(run))
		}
	}
	return n
}

// TLSBytes returns the bytes (5-byte headers included) of the TLS records
// tshark dissects on TCP port port between a and b, in either direction,
// with that port decoded as TLS. A tshark failure fails the test.
func (r *Result) TLSBytes(a, b netip.Addr, port uint16) int64 {
	recs, err := r.tlsRecords(port)
	if err != nil {
		r.tb.Fatalf("analyse capture %s: %v", r.Path, err)
	}
	a, b = a.Unmap(), b.Unmap()
	var n int64
	for _, rec := range recs {
		if (rec.src == a && rec.dst == b) || (rec.src == b && rec.dst == a) {
			n += rec.bytes
		}
	}
	return n
}

func (r *Result) tlsRecords(port uint16) ([]tlsRecord, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if recs, ok := r.tls[port]; ok {
		return recs, nil
	}
	out, err := tshark(r.Path, port, fmt.Sprintf("tls.record && tcp.port == %d", port),
		"-E", "occurrence=a", "-E", "aggregator=,",
		"-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tls.record.length")
	if err != nil {
		return nil, err
	}
	recs, err := parseTLS(out)
	if err != nil {
		return nil, err
	}
	r.tls[port] = recs
	return recs, nil
}

// Summary lists the TCP directions and their payload bytes, for failure
// messages.
func (r *Result) Summary() string {
	keys := make([]flowKey, 0, len(r.flows))
	for k := range r.flows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b flowKey) int {
		return cmp.Or(cmp.Compare(a.stream, b.stream), a.src.Compare(b.src))
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%d frames, %d dropped", r.Frames, r.Dropped)
	for _, k := range keys {
		var n int
		for _, run := range r.flows[k].runs {
			n += len(run)
		}
		fmt.Fprintf(&b, "\n  tcp stream %d %s -> %s: %d payload bytes", k.stream, k.src, k.dst, n)
	}
	return b.String()
}

// tshark prints fields of the frames matching a display filter, with
// HBONEPort (and tlsPort, if not 0) decoded as TLS.
func tshark(path string, tlsPort uint16, filter string, fieldArgs ...string) ([]byte, error) {
	args := []string{"-r", path, "-n", "-d", fmt.Sprintf("tcp.port==%d,tls", HBONEPort)}
	if tlsPort != 0 && tlsPort != HBONEPort {
		args = append(args, "-d", fmt.Sprintf("tcp.port==%d,tls", tlsPort))
	}
	args = append(args, "-Y", filter, "-T", "fields", "-E", "separator=/t")
	args = append(args, fieldArgs...)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("tshark", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run tshark %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// parseTCP reads lines of stream, ip.src, ipv6.src, ip.dst, ipv6.dst,
// srcport, dstport, seq_raw, payload (hex) and assembles each direction.
func parseTCP(out []byte) (map[flowKey]*flow, error) {
	flows := map[flowKey]*flow{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 1<<26)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 9 {
			return nil, fmt.Errorf("parse tshark tcp line %q: want 9 fields", sc.Text())
		}
		stream, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("parse tshark tcp line %q: stream: %w", sc.Text(), err)
		}
		src, err1 := endpoint(cmp.Or(f[1], f[2]), f[5])
		dst, err2 := endpoint(cmp.Or(f[3], f[4]), f[6])
		seq, err3 := strconv.ParseUint(f[7], 10, 32)
		payload, err4 := hex.DecodeString(strings.ReplaceAll(f[8], ":", ""))
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("parse tshark tcp line %q: %w", sc.Text(), err)
		}
		k := flowKey{stream: stream, src: src, dst: dst}
		fl := flows[k]
		if fl == nil {
			fl = &flow{}
			flows[k] = fl
		}
		if len(payload) > 0 {
			fl.segs = append(fl.segs, segment{seq: uint32(seq), data: payload})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read tshark output: %w", err)
	}
	for _, fl := range flows {
		fl.runs = assemble(fl.segs)
	}
	return flows, nil
}

// assemble orders segments by sequence number (modulo 2^32, relative to the
// first one captured) and joins them into contiguous runs, counting bytes
// that several segments carry (retransmissions, overlaps) once.
func assemble(segs []segment) [][]byte {
	if len(segs) == 0 {
		return nil
	}
	ref := segs[0].seq
	type placed struct {
		off  int64
		data []byte
	}
	ps := make([]placed, len(segs))
	for i, s := range segs {
		ps[i] = placed{off: int64(int32(s.seq - ref)), data: s.data}
	}
	slices.SortStableFunc(ps, func(a, b placed) int { return cmp.Compare(a.off, b.off) })
	var runs [][]byte
	var cur []byte
	var end int64
	for i, p := range ps {
		if i == 0 || p.off > end {
			if cur != nil {
				runs = append(runs, cur)
			}
			cur, end = slices.Clone(p.data), p.off+int64(len(p.data))
			continue
		}
		if tail := p.off + int64(len(p.data)) - end; tail > 0 {
			cur = append(cur, p.data[int64(len(p.data))-tail:]...)
			end += tail
		}
	}
	return append(runs, cur)
}

// parseTLS reads lines of ip.src, ipv6.src, ip.dst, ipv6.dst and the
// comma-separated record lengths of one frame.
func parseTLS(out []byte) ([]tlsRecord, error) {
	var recs []tlsRecord
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 1<<26)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("parse tshark tls line %q: want 5 fields", sc.Text())
		}
		src, err1 := lastAddr(cmp.Or(f[0], f[1]))
		dst, err2 := lastAddr(cmp.Or(f[2], f[3]))
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("parse tshark tls line %q: %w", sc.Text(), err)
		}
		for l := range strings.SplitSeq(f[4], ",") {
			if l == "" {
				continue
			}
			n, err := strconv.ParseInt(l, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse tshark tls line %q: %w", sc.Text(), err)
			}
			recs = append(recs, tlsRecord{src: src, dst: dst, bytes: 5 + n})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read tshark output: %w", err)
	}
	return recs, nil
}

func endpoint(addr, port string) (netip.AddrPort, error) {
	a, err := lastAddr(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("parse port %q: %w", port, err)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// lastAddr parses the innermost of a comma-separated list of addresses
// (tunnelled packets carry several IP headers).
func lastAddr(s string) (netip.Addr, error) {
	if i := strings.LastIndexByte(s, ','); i >= 0 {
		s = s[i+1:]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("parse address: %w", err)
	}
	return a.Unmap(), nil
}

// readPcap returns the frames of a classic pcap file (as dumpcap -P writes
// it), in either byte order and timestamp resolution.
func readPcap(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture file: %w", err)
	}
	defer f.Close()
	return parsePcap(bufio.NewReaderSize(f, 1<<20))
}

func parsePcap(rd io.Reader) ([][]byte, error) {
	var hdr [24]byte
	if _, err := io.ReadFull(rd, hdr[:]); err != nil {
		return nil, fmt.Errorf("read pcap header: %w", err)
	}
	var order binary.ByteOrder
	switch binary.LittleEndian.Uint32(hdr[:4]) {
	case 0xa1b2c3d4, 0xa1b23c4d: // micro- or nanosecond timestamps
		order = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		return nil, fmt.Errorf("read pcap header: magic %x is not a classic pcap file", hdr[:4])
	}
	var frames [][]byte
	for {
		var rec [16]byte
		_, err := io.ReadFull(rd, rec[:])
		if errors.Is(err, io.EOF) {
			return frames, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read pcap record %d: %w", len(frames)+1, err)
		}
		n := order.Uint32(rec[8:12])
		if n > 1<<20 {
			return nil, fmt.Errorf("read pcap record %d: length %d too large", len(frames)+1, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(rd, data); err != nil {
			return nil, fmt.Errorf("read pcap record %d: %w", len(frames)+1, err)
		}
		frames = append(frames, data)
	}
}
