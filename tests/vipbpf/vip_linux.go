package vipbpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Objects is the loaded rewriter: its program, its maps and the links
// Attach created. Its methods are safe for concurrent use.
type Objects struct {
	objs vipObjects

	mu     sync.Mutex // guards the fields below
	closed bool
	links  []link.Link
}

// Load loads the rewriter's program and maps, with no services configured.
func Load() (*Objects, error) {
	o := &Objects{}
	if err := loadVipObjects(&o.objs, nil); err != nil {
		return nil, fmt.Errorf("load vip objects: %w", err)
	}
	return o, nil
}

// Attach attaches the connect4 program to the cgroup v2 directory cgroupPath
// (a bpf_link, appended after the programs already attached there, so it
// runs after them). Closing the returned link detaches it early; Close
// detaches every link Attach made.
func (o *Objects) Attach(cgroupPath string) (link.Link, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, errClosed
	}
	l, err := link.AttachCgroup(link.CgroupOptions{
		Path:    cgroupPath,
		Attach:  ebpf.AttachCGroupInet4Connect,
		Program: o.objs.VipConnect4,
	})
	if err != nil {
		return nil, fmt.Errorf("attach vip_connect4 to cgroup %s: %w", cgroupPath, err)
	}
	o.links = append(o.links, l)
	return l, nil
}

// SetBackend makes connects to vip go to backend; setting it again replaces
// the backend. Both must be IPv4.
func (o *Objects) SetBackend(vip, backend netip.AddrPort) error {
	if !vip.Addr().Unmap().Is4() || !backend.Addr().Unmap().Is4() {
		return fmt.Errorf("set backend of %s to %s: not IPv4", vip, backend)
	}
	k := vipFrontend{Ip4: beIP4(vip.Addr()), Port: bePort(vip.Port())}
	v := vipBackend{Ip4: beIP4(backend.Addr()), Port: bePort(backend.Port())}
	if err := o.objs.Services.Put(&k, &v); err != nil {
		return fmt.Errorf("set backend of %s to %s: %w", vip, backend, err)
	}
	return nil
}

// Counters returns the rewriter's counters summed over CPUs.
func (o *Objects) Counters() (Counters, error) {
	var per []vipVipStats
	if err := o.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return Counters{}, fmt.Errorf("read vip counters: %w", err)
	}
	var c Counters
	for _, p := range per {
		c.Rewritten += p.Rewritten
		c.Passed += p.Passed
	}
	return c, nil
}

// ProgramID returns the kernel's id of the connect4 program, as
// link.QueryPrograms reports it.
func (o *Objects) ProgramID() (ebpf.ProgramID, error) {
	info, err := o.objs.VipConnect4.Info()
	if err != nil {
		return 0, fmt.Errorf("get vip_connect4 info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("get vip_connect4 id: not reported by the kernel")
	}
	return id, nil
}

// Close detaches every link Attach made and releases the program and maps.
// Close is idempotent.
func (o *Objects) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	var errs []error
	for _, l := range o.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close vip link: %w", err))
		}
	}
	o.links = nil
	if err := o.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close vip objects: %w", err))
	}
	return errors.Join(errs...)
}

var errClosed = errors.New("vip objects closed")

// beIP4 is the in-memory form of a C __be32 holding the IPv4 address a.
func beIP4(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return binary.NativeEndian.Uint32(b[:])
}

// bePort is the in-memory form of a C __be16 holding port.
func bePort(port uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], port)
	return binary.NativeEndian.Uint16(b[:])
}
