package redirect

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Pin names under Options.PinDir. Maps are pinned under their own names
// (pinnedMaps), programs under their function names (progs), links under
// linkPrefixCgroup<cgroup id>_<hook> and linkPrefixTCX<netns cookie>.
const (
	linkPrefixCgroup = "link_cgroup_"
	linkPrefixTCX    = "link_tcx_"
)

// pinnedMaps are the maps shared across loads through PinDir (not .rodata,
// which each load rebuilds from Options).
var pinnedMaps = []string{
	redirectMapMeshNetns,
	redirectMapIngressCfg,
	redirectMapSkOrig,
	redirectMapOrigDst,
	redirectMapCounters,
}

// editSpec, when set (by tests only), edits the collection spec before it
// is loaded, e.g. to shrink a map and provoke insertion failures.
var editSpec func(*ebpf.CollectionSpec)

// Objects is the loaded datapath: programs, maps and the attachments this
// process opened or reopened. Its methods are safe for concurrent use.
type Objects struct {
	pinDir string // "" without pinning
	objs   redirectObjects

	mu      sync.Mutex             // guards the fields below
	closed  bool                   // Close was called
	cgroups map[uint64][]link.Link // by cgroup id
	ingress map[uint64]link.Link   // by netns cookie
}

// Load loads the redirect programs and maps. With opts.PinDir it pins maps,
// programs and (later) links there, reusing maps pinned by an earlier Load;
// links pinned by an earlier Load are moved to the new programs at once
// (bpf_link_update: no moment without redirection) and links whose cgroup
// or device is gone are removed.
func Load(opts Options) (*Objects, error) {
	spec, err := loadRedirect()
	if err != nil {
		return nil, fmt.Errorf("load redirect spec: %w", err)
	}
	mark, mask := opts.SocketMark, opts.SocketMarkMask
	if mark == 0 {
		mark = SocketMark
	}
	if mask == 0 {
		mask = SocketMarkMask
	}
	if err := spec.Variables[redirectVarWeftMark].Set(mark); err != nil {
		return nil, fmt.Errorf("set socket mark: %w", err)
	}
	if err := spec.Variables[redirectVarWeftMarkMask].Set(mask); err != nil {
		return nil, fmt.Errorf("set socket mark mask: %w", err)
	}

	if editSpec != nil {
		editSpec(spec)
	}

	var copts ebpf.CollectionOptions
	if opts.PinDir != "" {
		if err := ensureBPFFS(opts.PinDir); err != nil {
			return nil, err
		}
		for _, name := range pinnedMaps {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
		copts.Maps.PinPath = opts.PinDir
	}

	o := &Objects{
		pinDir:  opts.PinDir,
		cgroups: make(map[uint64][]link.Link),
		ingress: make(map[uint64]link.Link),
	}
	if err := spec.LoadAndAssign(&o.objs, &copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load redirect objects from %s: %w: %w", o.pinDir, ErrIncompatiblePins, err)
		}
		return nil, fmt.Errorf("load redirect objects: %w", err)
	}
	if o.pinDir == "" {
		return o, nil
	}
	if err := o.pinPrograms(); err != nil {
		o.objs.Close()
		return nil, err
	}
	if err := o.adoptPinnedLinks(); err != nil {
		o.objs.Close()
		return nil, err
	}
	return o, nil
}

// ensureBPFFS creates dir and checks that it is on a bpffs.
func ensureBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs pin dir %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("check pin dir %s: not on a bpffs (mount -t bpf bpf <dir>)", dir)
	}
	return nil
}

// programs maps each program's pin name to the program.
func (o *Objects) programs() map[string]*ebpf.Program {
	p := &o.objs.redirectPrograms
	return map[string]*ebpf.Program{
		redirectProgWeftConnect4: p.WeftConnect4,
		redirectProgWeftConnect6: p.WeftConnect6,
		redirectProgWeftGetpeer4: p.WeftGetpeer4,
		redirectProgWeftGetpeer6: p.WeftGetpeer6,
		redirectProgWeftGetsock4: p.WeftGetsock4,
		redirectProgWeftGetsock6: p.WeftGetsock6,
		redirectProgWeftSockops:  p.WeftSockops,
		redirectProgWeftIngress:  p.WeftIngress,
	}
}

// pinPrograms pins the new programs, replacing pins of an earlier Load.
func (o *Objects) pinPrograms() error {
	for name, prog := range o.programs() {
		path := filepath.Join(o.pinDir, name)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("unpin old program %s: %w", path, err)
		}
		if err := prog.Pin(path); err != nil {
			return fmt.Errorf("pin program %s: %w", path, err)
		}
	}
	return nil
}

// adoptPinnedLinks moves every link pinned in pinDir to the new programs and
// removes links that no longer have a target. The links are closed again:
// AttachCgroup and AttachIngress reopen them on demand.
func (o *Objects) adoptPinnedLinks() error {
	entries, err := os.ReadDir(o.pinDir)
	if err != nil {
		return fmt.Errorf("read pin dir: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		var prog *ebpf.Program
		switch {
		case strings.HasPrefix(name, linkPrefixCgroup):
			_, hook, ok := parseCgroupLinkName(name)
			if !ok {
				continue
			}
			prog = o.cgroupHook(hook)
		case strings.HasPrefix(name, linkPrefixTCX):
			prog = o.objs.WeftIngress
		default:
			continue
		}
		if prog == nil {
			continue
		}
		l, err := reusePinnedLink(filepath.Join(o.pinDir, name), prog)
		if err != nil {
			return err
		}
		if l == nil {
			// Defunct (its cgroup or device is gone) and now unpinned.
			if cookie, ok := parseTCXLinkName(name); ok {
				if err := o.deleteIngressConfig(cookie); err != nil {
					return err
				}
			}
			continue
		}
		l.Close()
	}
	return nil
}

// linkAlive reports whether a cgroup or tcx link is still attached: the
// kernel detaches them (target id 0) when the cgroup or device goes away.
func linkAlive(l link.Link) (bool, error) {
	info, err := l.Info()
	if err != nil {
		return false, err
	}
	if cg := info.Cgroup(); cg != nil {
		return cg.CgroupId != 0, nil
	}
	if tcx := info.TCX(); tcx != nil {
		return tcx.Ifindex != 0, nil
	}
	return true, nil
}

// Close releases this process's handles on programs, maps and links. With a
// PinDir, pinned attachments stay in place (use Cleanup to remove them);
// without one, everything is detached. Close is idempotent.
func (o *Objects) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	var errs []error
	for id, links := range o.cgroups {
		for _, l := range links {
			if err := l.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close cgroup %d link: %w", id, err))
			}
		}
	}
	for cookie, l := range o.ingress {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close tcx link of netns %d: %w", cookie, err))
		}
	}
	o.cgroups, o.ingress = nil, nil
	if err := o.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close redirect objects: %w", err))
	}
	return errors.Join(errs...)
}

var errClosed = errors.New("redirect objects closed")

// Cleanup removes everything Load and the Attach methods pinned in pinDir,
// detaching the pinned links even if another process still holds them, and
// removes pinDir if it is then empty. Files it did not create are left alone.
// Missing pins are not an error.
func Cleanup(pinDir string) error {
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin dir: %w", err)
	}
	own := map[string]bool{}
	for _, name := range pinnedMaps {
		own[name] = true
	}
	for name := range (&Objects{}).programs() {
		own[name] = true
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(pinDir, name)
		_, _, isCgroup := parseCgroupLinkName(name)
		_, isTCX := parseTCXLinkName(name)
		switch {
		case isCgroup || isTCX:
			if l, err := link.LoadPinnedLink(path, nil); err == nil {
				if err := l.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
					errs = append(errs, fmt.Errorf("detach link %s: %w", path, err))
				}
				l.Close()
			}
		case own[name]:
		default:
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", path, err))
		}
	}
	if rest, err := os.ReadDir(pinDir); err == nil && len(rest) == 0 {
		if err := os.Remove(pinDir); err != nil {
			errs = append(errs, fmt.Errorf("remove pin dir: %w", err))
		}
	}
	return errors.Join(errs...)
}
