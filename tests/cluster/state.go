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

// run is an open run directory. Its owner holds two locks in the global
// lock directory for its lifetime: its run ID's and its address slot's.
type run struct {
	dir      string
	lock     *os.File // locks/<runID>.lock
	slotLock *os.File // slots/<slot>.lock
	state    runState
}

// globalDir holds the locks that say which run IDs and address slots are
// live, for every state root: liveness must not depend on which state root
// a reaper was pointed at, or a test with a private state root would reap
// everybody else's clusters.
const globalDir = "/run/weft-cluster"

func runLockPath(rid string) string { return filepath.Join(globalDir, "locks", rid+".lock") }
func slotLockPath(n int) string     { return filepath.Join(globalDir, "slots", fmt.Sprintf("%d.lock", n)) }

// closeLocks releases the run's locks (its processes must be gone first).
func (r *run) closeLocks() {
	if r.lock != nil {
		os.Remove(r.lock.Name())
		r.lock.Close()
	}
	if r.slotLock != nil {
		r.slotLock.Close()
	}
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
	for _, d := range []string{filepath.Join(globalDir, "locks"), filepath.Join(globalDir, "slots")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	// A slot is ours while we hold its lock; the kernel releases it when
	// this process dies, however it dies.
	var slotLock *os.File
	slot := -1
	for s := range maxSlots {
		f, err := lockFile(slotLockPath(s), false)
		if err == nil {
			slot, slotLock = s, f
			break
		}
	}
	if slot < 0 {
		return nil, fmt.Errorf("allocate cluster slot: all %d slots in use (locks under %s)", maxSlots, filepath.Join(globalDir, "slots"))
	}
	var id [3]byte
	if _, err := rand.Read(id[:]); err != nil {
		slotLock.Close()
		return nil, fmt.Errorf("generate run id: %w", err)
	}
	rid := hex.EncodeToString(id[:])
	lock, err := lockFile(runLockPath(rid), false)
	if err != nil {
		slotLock.Close()
		return nil, err
	}
	dir := filepath.Join(base, rid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		lock.Close()
		slotLock.Close()
		return nil, fmt.Errorf("create run dir: %w", err)
	}
	r := &run{dir: dir, lock: lock, slotLock: slotLock, state: runState{
		RunID: rid, Name: name, Slot: slot, OwnerPID: os.Getpid(), Created: time.Now(), CNI: cni,
	}}
	for i := range nodes {
		r.state.Nodes = append(r.state.Nodes, fmt.Sprintf("node%d", i))
	}
	if err := r.save(); err != nil {
		r.closeLocks()
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

// ownerAlive reports whether the run directory's owner is alive.
func ownerAlive(dir string) bool { return runIDLive(filepath.Base(dir)) }

// runIDLive reports whether some live process holds run ID rid's lock.
func runIDLive(rid string) bool {
	f, err := os.OpenFile(runLockPath(rid), os.O_RDWR, 0)
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
		os.Remove(runLockPath(info.RunID))
	}
	// Orphans of any state root (or whose run directory is gone): only run
	// IDs whose global lock nobody holds.
	for _, rid := range orphanRunIDs() {
		if !live[rid] && !runIDLive(rid) {
			if err := teardown(rid); err != nil {
				errs = append(errs, err)
			}
			os.Remove(runLockPath(rid))
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
