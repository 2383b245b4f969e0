package redirect

import (
	"errors"
	"fmt"
	"github.com/weftmesh/weft/internal/mountinfo"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// cgroupHooks are the outbound programs attached at a cgroup, in attach
// order: sockops and the getpeername/getsockname hooks first, so a connect()
// is only ever rewritten once its bookkeeping is in place.
var cgroupHooks = []struct {
	name   string // pin name suffix
	attach ebpf.AttachType
}{
	{"sockops", ebpf.AttachCGroupSockOps},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername},
	{"getsockname4", ebpf.AttachCgroupInet4GetSockname},
	{"getsockname6", ebpf.AttachCgroupInet6GetSockname},
	{"connect4", ebpf.AttachCGroupInet4Connect},
	{"connect6", ebpf.AttachCGroupInet6Connect},
}

func (o *Objects) cgroupHook(hook string) *ebpf.Program {
	p := &o.objs.redirectPrograms
	switch hook {
	case "sockops":
		return p.WeftSockops
	case "getpeername4":
		return p.WeftGetpeer4
	case "getpeername6":
		return p.WeftGetpeer6
	case "getsockname4":
		return p.WeftGetsock4
	case "getsockname6":
		return p.WeftGetsock6
	case "connect4":
		return p.WeftConnect4
	case "connect6":
		return p.WeftConnect6
	}
	return nil
}

func cgroupLinkName(id uint64, hook string) string {
	return linkPrefixCgroup + strconv.FormatUint(id, 10) + "_" + hook
}

func parseCgroupLinkName(name string) (id uint64, hook string, ok bool) {
	rest, ok := strings.CutPrefix(name, linkPrefixCgroup)
	if !ok {
		return 0, "", false
	}
	idText, hook, ok := strings.Cut(rest, "_")
	if !ok {
		return 0, "", false
	}
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil || !knownHook(hook) {
		return 0, "", false
	}
	return id, hook, true
}

func knownHook(hook string) bool {
	for _, h := range cgroupHooks {
		if h.name == hook {
			return true
		}
	}
	return false
}

// cgroupID returns the id of the cgroup v2 directory at path (its inode
// number, which is what link info and bpf_get_current_cgroup_id report).
func cgroupID(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.IsDir() {
		return 0, fmt.Errorf("stat cgroup %s: not a cgroup directory", path)
	}
	return st.Ino, nil
}

// AttachCgroup attaches the outbound programs (connect4/6, getpeername4/6,
// getsockname4/6, sockops) to the cgroup v2 directory cgroupPath — in
// production the cgroup2 root (Cgroup2Root), so every process on the node is
// covered, including those started before. With a PinDir the links are
// pinned, and links pinned for this cgroup by an earlier Load are reused
// instead of attaching again. Calling it again is a no-op.
//
// The returned links are owned by o: Close releases them (pinned links stay
// attached), DetachCgroup removes them. Do not close them yourself.
func (o *Objects) AttachCgroup(cgroupPath string) ([]link.Link, error) {
	id, err := cgroupID(cgroupPath)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, errClosed
	}
	if links, ok := o.cgroups[id]; ok {
		return links, nil
	}
	var links []link.Link
	var created []link.Link
	fail := func(err error) ([]link.Link, error) {
		for _, l := range created {
			l.Unpin()
			l.Close()
		}
		for _, l := range links {
			l.Close()
		}
		return nil, err
	}
	for _, h := range cgroupHooks {
		prog := o.cgroupHook(h.name)
		var pin string
		if o.pinDir != "" {
			pin = filepath.Join(o.pinDir, cgroupLinkName(id, h.name))
			l, err := reusePinnedLink(pin, prog)
			if err != nil {
				return fail(err)
			}
			if l != nil {
				links = append(links, l)
				continue
			}
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: h.attach, Program: prog})
		if err != nil {
			return fail(fmt.Errorf("attach %s to cgroup %s: %w", h.name, cgroupPath, err))
		}
		created = append(created, l)
		if pin != "" {
			if err := l.Pin(pin); err != nil {
				return fail(fmt.Errorf("pin %s link: %w", h.name, err))
			}
		}
	}
	links = append(links, created...)
	o.cgroups[id] = links
	return links, nil
}

// reusePinnedLink opens the link pinned at pin and points it at prog. It
// returns nil, nil if there is no pin, or if the pinned link's target is
// gone (the stale pin is removed).
func reusePinnedLink(pin string, prog *ebpf.Program) (link.Link, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	alive, err := linkAlive(l)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("inspect pinned link %s: %w", pin, err)
	}
	if !alive {
		err := l.Unpin()
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("unpin defunct link %s: %w", pin, err)
		}
		return nil, nil
	}
	if err := l.Update(prog); err != nil {
		l.Close()
		return nil, fmt.Errorf("update pinned link %s: %w", pin, err)
	}
	return l, nil
}

// DetachCgroup detaches the outbound programs from cgroupPath and removes
// their pins. Detaching what is not attached is not an error.
func (o *Objects) DetachCgroup(cgroupPath string) error {
	id, err := cgroupID(cgroupPath)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return errClosed
	}
	var errs []error
	for _, l := range o.cgroups[id] {
		errs = append(errs, detachLink(l))
	}
	delete(o.cgroups, id)
	if o.pinDir != "" {
		for _, h := range cgroupHooks {
			pin := filepath.Join(o.pinDir, cgroupLinkName(id, h.name))
			l, err := link.LoadPinnedLink(pin, nil)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("open pinned link %s: %w", pin, err))
				continue
			}
			errs = append(errs, detachLink(l))
		}
	}
	return errors.Join(errs...)
}

// detachLink detaches l even if other handles to it exist, removes its pin
// and closes it.
func detachLink(l link.Link) error {
	var errs []error
	if err := l.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
		errs = append(errs, fmt.Errorf("detach link: %w", err))
	}
	if err := l.Unpin(); err != nil {
		errs = append(errs, fmt.Errorf("unpin link: %w", err))
	}
	if err := l.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close link: %w", err))
	}
	return errors.Join(errs...)
}

// Cgroup2Root returns the mount point of the cgroup v2 hierarchy from
// /proc/self/mountinfo: /sys/fs/cgroup on pure v2 hosts,
// /sys/fs/cgroup/unified on hybrid ones.
func Cgroup2Root() (string, error) { return mountinfo.Cgroup2Root() }
