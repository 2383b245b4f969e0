package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Enroll puts the pod netns with the given cookie in mesh_netns: from now on
// TCP connects from it are redirected to ztunnel. Connections opened before
// are not touched. Enrolling again replaces info.
func (o *Objects) Enroll(netnsCookie uint64, info PodInfo) error {
	ip, err := beIP4(info.IP)
	if err != nil {
		return fmt.Errorf("enroll netns %d: %w", netnsCookie, err)
	}
	v := redirectPodInfo{
		PodId:        info.PodID,
		Flags:        info.Flags,
		Ip4:          ip,
		OutboundPort: info.OutboundPort,
	}
	if v.OutboundPort == 0 {
		v.OutboundPort = OutboundPort
	}
	if err := o.objs.MeshNetns.Put(netnsCookie, &v); err != nil {
		return fmt.Errorf("enroll netns %d: %w", netnsCookie, err)
	}
	return nil
}

// Unenroll removes the pod netns from mesh_netns: new connects from it are
// no longer redirected; open connections (through ztunnel or not) keep
// working. Unenrolling what is not enrolled is not an error.
func (o *Objects) Unenroll(netnsCookie uint64) error {
	if err := o.objs.MeshNetns.Delete(netnsCookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unenroll netns %d: %w", netnsCookie, err)
	}
	return nil
}

// IsEnrolled reports whether the netns with cookie is enrolled.
func (o *Objects) IsEnrolled(netnsCookie uint64) (bool, error) {
	var v redirectPodInfo
	err := o.objs.MeshNetns.Lookup(netnsCookie, &v)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return false, nil
	}
	return false, fmt.Errorf("look up netns %d: %w", netnsCookie, err)
}

// Enrolled returns every enrolled netns cookie with its PodInfo, for
// reconciling after a restart.
func (o *Objects) Enrolled() (map[uint64]PodInfo, error) {
	out := map[uint64]PodInfo{}
	var (
		k uint64
		v redirectPodInfo
	)
	it := o.objs.MeshNetns.Iterate()
	for it.Next(&k, &v) {
		out[k] = PodInfo{
			PodID:        v.PodId,
			Flags:        v.Flags,
			IP:           ip4FromBE(v.Ip4),
			OutboundPort: v.OutboundPort,
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate mesh_netns: %w", err)
	}
	return out, nil
}

// LookupOrigDst returns the original destination of a connection that was
// redirected to ztunnel's outbound listener, given the pod netns and the
// peer address of the accepted connection (127.0.0.1:<port>; a v4-mapped
// address is unmapped). It returns ErrNotFound if there is none.
func (o *Objects) LookupOrigDst(netnsCookie uint64, srcIP netip.Addr, srcPort uint16) (netip.AddrPort, error) {
	ip, err := beIP4(srcIP)
	if err != nil || !srcIP.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("look up original destination of %s: not an IPv4 address", srcIP)
	}
	key := redirectOrigKey{NetnsCookie: netnsCookie, SrcIp4: ip, SrcPort: srcPort}
	var v redirectOrigAddr
	if err := o.objs.OrigDst.Lookup(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return netip.AddrPort{}, fmt.Errorf("look up original destination of %s in netns %d: %w",
				netip.AddrPortFrom(srcIP.Unmap(), srcPort), netnsCookie, ErrNotFound)
		}
		return netip.AddrPort{}, fmt.Errorf("look up original destination: %w", err)
	}
	return netip.AddrPortFrom(ip4FromBE(v.Ip4), beToHost16(v.Port)), nil
}

// Counters returns the datapath counters summed over CPUs. They survive
// restarts when pinned.
func (o *Objects) Counters() (Counters, error) {
	var per []redirectCounterSet
	if err := o.objs.Counters.Lookup(uint32(0), &per); err != nil {
		return Counters{}, fmt.Errorf("read counters: %w", err)
	}
	var c Counters
	for _, p := range per {
		c.Redirected += p.Redirected
		c.SkippedUDP += p.SkippedUdp
		c.SkippedLoopback += p.SkippedLoopback
		c.SkippedSelf += p.SkippedSelf
		c.SkippedMarked += p.SkippedMarked
		c.SkippedBoundDev += p.SkippedBoundDev
		c.SkippedIPv6 += p.SkippedIpv6
		c.InboundAssigned += p.InboundAssigned
		c.InboundDropNoListener += p.InboundDropNoListener
		c.ProbePass += p.ProbePass
		c.Errors += p.Errors
	}
	return c, nil
}

// beIP4 converts an IPv4 (or v4-mapped) address to the in-memory form of a
// C __be32; the zero Addr becomes 0.
func beIP4(a netip.Addr) (uint32, error) {
	if !a.IsValid() {
		return 0, nil
	}
	a = a.Unmap()
	if !a.Is4() {
		return 0, fmt.Errorf("%s is not an IPv4 address", a)
	}
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:]), nil
}

func ip4FromBE(v uint32) netip.Addr {
	if v == 0 {
		return netip.Addr{}
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// beToHost16 converts the in-memory value of a C __be16 to a port number.
func beToHost16(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
