package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// runState is what a run directory records about its cluster, written before
// the resources it names are created, so a reaper can remove them after the
// owner was killed at any point.
type runState struct {
	RunID    string    `json:"runID"`
	Name     string    `json:"name"`
	Slot     int       `json:"slot"`
	OwnerPID int       `json:"ownerPID"`
	Created  time.Time `json:"created"`
	Nodes    []string  `json:"nodes"`
	CNI      CNI       `json:"cni"`
	// Ready is set once the cluster is fully up.
	Ready bool `json:"ready"`
	// StartSeconds is how long Start took.
	StartSeconds float64 `json:"startSeconds,omitempty"`
}

// run is an open run directory, held locked by its owner.
type run struct {
	dir   string
	lock  *os.File
	state runState
}

func (r *run) path(elem ...string) string { return filepath.Join(append([]string{r.dir}, elem...)...) }

func (r *run) save() error {
	data, err := json.MarshalIndent(r.state, "", "  ")
	if err != nil {
		return fmt.Errorf("encode run state: %w", err)
	}
	tmp := r.path("state.json.tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write run state: %w", err)
	}
	return os.Rename(tmp, r.path("state.json"))
}

func clustersDir(stateRoot string) string { return filepath.Join(stateRoot, "clusters") }

// newRun allocates a run ID and a free address slot and creates the run
// directory, locked for the life of this process.
func newRun(stateRoot, name string, nodes int, cni CNI) (*run, error) {
	base := clustersDir(stateRoot)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", base, err)
	}
	// Slot allocation is serialised across processes by one lock file.
	alloc, err := lockFile(filepath.Join(stateRoot, "alloc.lock"), true)
	if err != nil {
		return nil, err
	}
	defer alloc.Close()

	used := map[int]bool{}
	for _, st := range listRuns(stateRoot) {
		used[st.Slot] = true
	}
	slot := -1
	for s := range maxSlots {
		if !used[s] {
			slot = s
			break
		}
	}
	if slot < 0 {
		return nil, fmt.Errorf("allocate cluster slot: all %d slots in use under %s", maxSlots, base)
	}
	var id [3]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("generate run id: %w", err)
	}
	rid := hex.EncodeToString(id[:])
	dir := filepath.Join(base, rid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create run dir: %w", err)
	}
	lock, err := lockFile(filepath.Join(dir, "lock"), false)
	if err != nil {
		return nil, err
	}
	r := &run{dir: dir, lock: lock, state: runState{
		RunID: rid, Name: name, Slot: slot, OwnerPID: os.Getpid(), Created: time.Now(), CNI: cni,
	}}
	for i := range nodes {
		r.state.Nodes = append(r.state.Nodes, fmt.Sprintf("node%d", i))
	}
	if err := r.save(); err != nil {
		lock.Close()
		return nil, err
	}
	return r, nil
}

// lockFile opens path and takes an exclusive flock on it. The lock is released
// when the file is closed or the process dies, which is how reapers tell a
// live owner from a dead one.
func lockFile(path string, wait bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// ownerAlive reports whether the run directory's lock is held by a live process.
func ownerAlive(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// listRuns returns the state of every run directory under stateRoot.
func listRuns(stateRoot string) []runState {
	entries, err := os.ReadDir(clustersDir(stateRoot))
	if err != nil {
		return nil
	}
	var out []runState
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := readState(filepath.Join(clustersDir(stateRoot), e.Name()))
		if err != nil {
			// A run dir without readable state still owns its name.
			st = runState{RunID: e.Name(), Slot: -1}
		}
		out = append(out, st)
	}
	return out
}

func readState(dir string) (runState, error) {
	var st runState
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("decode %s/state.json: %w", dir, err)
	}
	return st, nil
}

// RunInfo describes a cluster found under a state root.
type RunInfo struct {
	RunID      string
	Name       string
	Dir        string
	Kubeconfig string
	OwnerPID   int
	OwnerAlive bool
	Ready      bool
	Nodes      []string
	CNI        CNI
	Created    time.Time
}

// List returns the clusters recorded under stateRoot ("" = DefaultStateRoot).
func List(stateRoot string) []RunInfo {
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	var out []RunInfo
	for _, st := range listRuns(stateRoot) {
		dir := filepath.Join(clustersDir(stateRoot), st.RunID)
		out = append(out, RunInfo{
			RunID: st.RunID, Name: st.Name, Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"),
			OwnerPID: st.OwnerPID, OwnerAlive: ownerAlive(dir), Ready: st.Ready,
			Nodes: st.Nodes, CNI: st.CNI, Created: st.Created,
		})
	}
	return out
}

// Reap removes every cluster under stateRoot whose owner is dead, and every
// namespace, cgroup and pin root named after a run ID that has no live owner.
// It never touches a cluster whose owner is alive.
func Reap(stateRoot string) error {
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	var errs []error
	live := map[string]bool{}
	for _, info := range List(stateRoot) {
		if info.OwnerAlive {
			live[info.RunID] = true
			continue
		}
		if err := teardown(info.RunID); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.RemoveAll(info.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove run dir: %w", err))
		}
	}
	// Orphans whose run directory is gone (e.g. the state root was wiped).
	for _, rid := range orphanRunIDs() {
		if !live[rid] {
			if err := teardown(rid); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// orphanRunIDs lists run IDs that still own a netns, a cgroup or a pin root.
func orphanRunIDs() []string {
	seen := map[string]bool{}
	add := func(name string) {
		rest, ok := strings.CutPrefix(name, resourcePrefix)
		if !ok {
			return
		}
		rid, _, _ := strings.Cut(rest, "-")
		if len(rid) == 6 {
			seen[rid] = true
		}
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			add(e.Name())
		}
	}
	if cg, err := cgroup2Root(); err == nil {
		if entries, err := os.ReadDir(filepath.Join(cg, cgroupParent)); err == nil {
			for _, e := range entries {
				add(resourcePrefix + e.Name())
			}
		}
	}
	if entries, err := os.ReadDir(bpffsRoot); err == nil {
		for _, e := range entries {
			add(e.Name())
		}
	}
	var out []string
	for rid := range seen {
		out = append(out, rid)
	}
	return out
}
