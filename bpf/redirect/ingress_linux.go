package redirect

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func tcxLinkName(cookie uint64) string {
	return linkPrefixTCX + strconv.FormatUint(cookie, 10)
}

func parseTCXLinkName(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, linkPrefixTCX)
	if !ok {
		return 0, false
	}
	cookie, err := strconv.ParseUint(rest, 10, 64)
	return cookie, err == nil
}

// AttachIngress attaches the inbound program to the tcx ingress of ifname
// (a pod's "eth0") in the network namespace run enters, and returns that
// namespace's cookie (the key for DetachIngress, Enroll and LookupOrigDst).
//
// The interface is resolved and the tcx link created on run's locked thread
// inside the pod netns: an ifindex means nothing outside its namespace. The
// per-pod config is written before the program is attached. With a PinDir
// the link is pinned under the netns cookie; a link already pinned for this
// netns and interface is reused (no duplicate attachment). Calling it again
// updates cfg.
//
// Once attached, a SYN that ztunnel's inbound listener cannot take is
// dropped (fail closed): open the listeners before attaching.
func (o *Objects) AttachIngress(run NetnsRunner, ifname string, cfg IngressConfig) (uint64, error) {
	key, val, err := ingressValue(cfg)
	if err != nil {
		return 0, fmt.Errorf("attach ingress %s: %w", ifname, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, errClosed
	}
	var cookie uint64
	err = run(func() error {
		var err error
		cookie, err = threadNetnsCookie()
		if err != nil {
			return err
		}
		iface, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("find interface %s in netns %d: %w", ifname, cookie, err)
		}
		if len(iface.HardwareAddr) != 6 {
			return fmt.Errorf("attach tcx ingress %s in netns %d: not an Ethernet device: %w", ifname, cookie, ErrUnsupported)
		}
		val.NetnsCookie = cookie
		if err := o.objs.IngressCfg.Put(key, &val); err != nil {
			return fmt.Errorf("write ingress config of %s: %w", cfg.PodIP, err)
		}
		err = o.attachIngressLocked(cookie, iface)
		if err != nil {
			if _, attached := o.ingress[cookie]; !attached {
				o.objs.IngressCfg.Delete(key)
			}
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return cookie, nil
}

// attachIngressLocked attaches (or reuses) the tcx link of netns cookie on
// iface. It runs on a thread in that netns; o.mu must be held.
func (o *Objects) attachIngressLocked(cookie uint64, iface *net.Interface) error {
	if l, ok := o.ingress[cookie]; ok {
		if attached, err := tcxAttachedTo(l, iface.Index); err == nil && attached {
			return nil
		}
		detachLink(l) // stale: its device is gone or was replaced
		delete(o.ingress, cookie)
	}
	var pin string
	if o.pinDir != "" {
		pin = filepath.Join(o.pinDir, tcxLinkName(cookie))
		l, err := reusePinnedLink(pin, o.objs.WeftIngress)
		if err != nil {
			return err
		}
		if l != nil {
			if attached, err := tcxAttachedTo(l, iface.Index); err == nil && attached {
				o.ingress[cookie] = l
				return nil
			}
			// Pinned for another device of this netns: replace it.
			if err := detachLink(l); err != nil {
				return fmt.Errorf("replace pinned link %s: %w", pin, err)
			}
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: iface.Index,
		Program:   o.objs.WeftIngress,
		Attach:    ebpf.AttachTCXIngress,
		Anchor:    link.Head(),
	})
	if err != nil {
		return fmt.Errorf("attach tcx ingress %s (ifindex %d) in netns %d: %w", iface.Name, iface.Index, cookie, err)
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("pin tcx link of netns %d: %w", cookie, err)
		}
	}
	o.ingress[cookie] = l
	return nil
}

// tcxAttachedTo reports whether the tcx link l is attached to ifindex.
func tcxAttachedTo(l link.Link, ifindex int) (bool, error) {
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("inspect tcx link: %w", err)
	}
	tcx := info.TCX()
	return tcx != nil && tcx.Ifindex == uint32(ifindex) && tcx.Ifindex != 0, nil
}

// DetachIngress detaches the inbound program from the pod netns with the
// given cookie, removes its pin and its config. It needs no access to the
// netns, which may already be gone. Detaching what is not attached is not an
// error.
func (o *Objects) DetachIngress(netnsCookie uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return errClosed
	}
	var errs []error
	if l, ok := o.ingress[netnsCookie]; ok {
		errs = append(errs, detachLink(l))
		delete(o.ingress, netnsCookie)
	}
	if o.pinDir != "" {
		pin := filepath.Join(o.pinDir, tcxLinkName(netnsCookie))
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			errs = append(errs, detachLink(l))
		} else if !isNotExist(err) {
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", pin, err))
		}
	}
	errs = append(errs, o.deleteIngressConfig(netnsCookie))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach ingress of netns %d: %w", netnsCookie, err)
	}
	return nil
}

// deleteIngressConfig removes the ingress_cfg entries of a pod netns.
func (o *Objects) deleteIngressConfig(netnsCookie uint64) error {
	var (
		key  uint32
		val  redirectIngressConfig
		keys []uint32
	)
	it := o.objs.IngressCfg.Iterate()
	for it.Next(&key, &val) {
		if val.NetnsCookie == netnsCookie {
			keys = append(keys, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate ingress config: %w", err)
	}
	for _, k := range keys {
		if err := o.objs.IngressCfg.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete ingress config of %s: %w", ip4FromBE(k), err)
		}
	}
	return nil
}

// ingressValue converts cfg to the ingress_cfg key and value.
func ingressValue(cfg IngressConfig) (uint32, redirectIngressConfig, error) {
	if !cfg.PodIP.IsValid() {
		return 0, redirectIngressConfig{}, errors.New("check ingress config: no pod IP")
	}
	pod, err := beIP4(cfg.PodIP)
	if err != nil {
		return 0, redirectIngressConfig{}, fmt.Errorf("check pod IP: %w", err)
	}
	probe, err := beIP4(cfg.ProbeSource)
	if err != nil {
		return 0, redirectIngressConfig{}, fmt.Errorf("check probe source: %w", err)
	}
	v := redirectIngressConfig{
		ProbeIp4:    probe,
		InboundPort: cfg.InboundPort,
		HbonePort:   cfg.HBONEPort,
	}
	if v.InboundPort == 0 {
		v.InboundPort = InboundPort
	}
	if v.HbonePort == 0 {
		v.HbonePort = HBONEPort
	}
	return pod, v, nil
}
