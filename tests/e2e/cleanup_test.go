package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/tests/cluster"
)

// TestClusterCleanup: `weft-cluster down` leaves nothing behind, and a
// cluster whose owner was killed is reaped by the next run — while a live
// cluster next to it is left alone.
func TestClusterCleanup(t *testing.T) {
	cluster.RequireRoot(t)
	repo, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(repo, "bin", "weft-cluster")
	build := exec.Command("go", "build", "-o", bin, "./tests/cmd/weft-cluster")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build weft-cluster: %v\n%s", err, out)
	}
	stateRoot := t.TempDir() // a state root of its own: other clusters are not ours to judge

	up := func(name string) cluster.RunInfo {
		t.Helper()
		out, err := exec.Command(bin, "--state-root", stateRoot, "up", "--name", name, "--nodes", "2").CombinedOutput()
		if err != nil {
			t.Fatalf("weft-cluster up %s: %v\n%s", name, err, out)
		}
		t.Logf("weft-cluster up %s:\n%s", name, out)
		for _, r := range cluster.List(stateRoot) {
			if r.Name == name {
				return r
			}
		}
		t.Fatalf("cluster %s not listed after up", name)
		return cluster.RunInfo{}
	}
	t.Cleanup(func() { exec.Command(bin, "--state-root", stateRoot, "down", "--all").Run() })

	t.Run("down removes everything", func(t *testing.T) {
		r := up("down-test")
		res := resourcesOf(t, r.RunID)
		if len(res.netns) < 4 || len(res.procs) < 5 {
			t.Fatalf("running cluster shows netns %v and %d processes, want >= 4 and >= 5", res.netns, len(res.procs))
		}
		out, err := exec.Command(bin, "--state-root", stateRoot, "down", "down-test").CombinedOutput()
		if err != nil {
			t.Fatalf("weft-cluster down: %v\n%s", err, out)
		}
		assertGone(t, r, res)
	})

	t.Run("killed owner is reaped by the next run, live cluster kept", func(t *testing.T) {
		live := up("live")
		victim := up("victim")
		res := resourcesOf(t, victim.RunID)
		// SIGKILL: the owner gets no chance to clean up; its etcd, API server,
		// emulators and pods keep running.
		if err := syscall.Kill(victim.OwnerPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := cluster.Poll(testCtx(t), 10*time.Second, 50*time.Millisecond, "owner death", func(ctx context.Context) (bool, string, error) {
			return syscall.Kill(victim.OwnerPID, 0) == syscall.ESRCH, "", nil
		}); err != nil {
			t.Fatal(err)
		}
		if still := resourcesOf(t, victim.RunID); len(still.procs) == 0 {
			t.Fatalf("killing the owner already stopped its processes; the test proves nothing")
		}
		// What every run does first (cluster.Start calls Reap).
		if err := cluster.Reap(stateRoot); err != nil {
			t.Fatalf("reap: %v", err)
		}
		assertGone(t, victim, res)
		after := resourcesOf(t, live.RunID)
		if len(after.procs) < 5 || len(after.netns) < 4 {
			t.Errorf("reap touched the live cluster: netns %v, %d processes", after.netns, len(after.procs))
		}
		out, err := exec.Command(bin, "--state-root", stateRoot, "status", "live").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("node1")) {
			t.Errorf("live cluster status after reaping its neighbour: %v\n%s", err, out)
		}
	})
}

type resources struct {
	netns []string
	procs []int
	veth  bool
	pins  []string
}

// resourcesOf lists the host resources named after a run ID.
func resourcesOf(t *testing.T, rid string) resources {
	t.Helper()
	var r resources
	prefix := "weft-" + rid + "-"
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			r.netns = append(r.netns, e.Name())
		}
	}
	if _, err := os.Stat("/sys/class/net/wft" + rid); err == nil {
		r.veth = true
	}
	pins, _ := filepath.Glob("/sys/fs/bpf/" + prefix + "*")
	r.pins = pins
	// Every process of the run is in its cgroup subtree; scan /proc too, in
	// case one escaped it.
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(data, []byte("/weft/"+rid+"/")) || zombie(filepath.Dir(p)) {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(filepath.Base(filepath.Dir(p)), &pid); err == nil {
			r.procs = append(r.procs, pid)
		}
	}
	return r
}

func assertGone(t *testing.T, r cluster.RunInfo, before resources) {
	t.Helper()
	after := resourcesOf(t, r.RunID)
	if len(after.netns) > 0 || after.veth || len(after.pins) > 0 || len(after.procs) > 0 {
		t.Errorf("left behind: netns %v, host veth %v, pins %v, processes %v", after.netns, after.veth, after.pins, after.procs)
	}
	for _, pid := range before.procs {
		if syscall.Kill(pid, 0) == nil {
			if cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil && len(cmdline) > 0 {
				t.Errorf("process %d (%s) of the cluster still runs", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
			}
		}
	}
	if _, err := os.Stat(r.Dir); !os.IsNotExist(err) {
		t.Errorf("run dir %s still exists (%v)", r.Dir, err)
	}
	var st map[string]any
	if data, err := os.ReadFile(filepath.Join(r.Dir, "state.json")); err == nil {
		json.Unmarshal(data, &st)
		t.Errorf("state left: %v", st)
	}
}

// zombie reports whether /proc/PID is a process that has exited and waits
// for its parent to reap it. Children of a SIGKILLed owner are reparented to
// this machine's init, which reaps them when it gets to it; they hold no
// resources but a PID.
func zombie(procDir string) bool {
	data, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return true // gone
	}
	// pid (comm) state …; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return false
	}
	state := data[i+2]
	return state == 'Z' || state == 'X'
}
