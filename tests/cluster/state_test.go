package cluster

import (
	"os"
	"os/exec"
	"testing"
)

// TestReapSparesLiveOwnersOfOtherStateRoots: a reaper pointed at its own
// state root must not remove resources of a run whose owner is alive but
// recorded elsewhere — and must remove them once that owner is gone.
func TestReapSparesLiveOwnersOfOtherStateRoots(t *testing.T) {
	RequireRoot(t)
	if err := os.MkdirAll(globalDir+"/locks", 0o755); err != nil {
		t.Fatal(err)
	}
	const rid = "f00d42" // 6 hex chars, like real run IDs
	ns := netnsName(rid, "x")
	exec.Command("ip", "netns", "delete", ns).Run() // leftover of a killed run
	lock, err := lockFile(runLockPath(rid), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lock.Close()
		os.Remove(runLockPath(rid))
		exec.Command("ip", "netns", "delete", ns).Run()
	})
	if err := ip("netns", "add", ns); err != nil {
		t.Fatal(err)
	}

	if err := Reap(t.TempDir()); err != nil {
		t.Fatalf("reap: %v", err)
	}
	if !netnsExists(ns) {
		t.Fatalf("reap with another state root removed the netns of a live run")
	}
	lock.Close() // the owner dies
	if err := Reap(t.TempDir()); err != nil {
		t.Fatalf("reap: %v", err)
	}
	if netnsExists(ns) {
		t.Errorf("reap left the netns of a dead run")
	}
}
