// Package testutil holds helpers for weft's root tests: host objects named
// after the test process (so the next run reaps what a killed run left
// behind) and the privilege gate that skips without root but fails when CI
// demands the privileged tests; and golden-file comparison for the CLI
// packages. Only _test.go files may import it; it must
// not import any weft component.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/weftmesh/weft/internal/mountinfo"
)

// Names makes unique names for one test package's host objects:
// <prefix><pid>-<kind><n>. It is safe for concurrent use.
type Names struct {
	prefix string
	run    string
	seq    atomic.Int64
	reap   sync.Once
	// ReapExtra, if set, is called once with the stale names' predicate to
	// remove objects only this package knows about (e.g. pin dirs).
	ReapExtra func(stale func(name string) bool)
}

// NewNames returns a namer for prefix (a short tag per package, e.g. "wbt").
func NewNames(prefix string) *Names {
	return &Names{prefix: prefix, run: fmt.Sprintf("%s%d-", prefix, os.Getpid())}
}

// Unique returns a new name of kind.
func (n *Names) Unique(kind string) string {
	return fmt.Sprintf("%s%s%d", n.run, kind, n.seq.Add(1))
}

// RequirePrivileged skips tb without root, or fails it when
// WEFT_REQUIRE_PRIVILEGED=1 (CI): a skip must not look like a pass. With
// root, it first reaps the objects of killed runs, once per process.
func (n *Names) RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		n.reap.Do(n.reapStale)
		return
	}
	if os.Getenv("WEFT_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatal("WEFT_REQUIRE_PRIVILEGED=1 but not running as root")
	}
	tb.Skip("needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
}

// Stale reports whether name was made by a Names of this prefix in a process
// that is gone.
func (n *Names) Stale(name string) bool {
	rest, ok := strings.CutPrefix(name, n.prefix)
	if !ok {
		return false
	}
	pidText, _, ok := strings.Cut(rest, "-")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid == os.Getpid() {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// reapStale removes the named netns (with their veths) and top-level cgroups
// of killed runs, then whatever ReapExtra knows.
func (n *Names) reapStale() {
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if n.Stale(e.Name()) {
				exec.Command("ip", "netns", "del", e.Name()).Run()
			}
		}
	}
	if root, err := mountinfo.Cgroup2Root(); err == nil {
		if entries, err := os.ReadDir(root); err == nil {
			for _, e := range entries {
				if e.IsDir() && n.Stale(e.Name()) {
					os.Remove(filepath.Join(root, e.Name()))
				}
			}
		}
	}
	if n.ReapExtra != nil {
		n.ReapExtra(n.Stale)
	}
}

// Run runs a host command and fails tb with its output on error.
func Run(tb testing.TB, name string, args ...string) {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Golden compares got with the golden file at path or, when update is set
// (a test's -update flag), rewrites the file with got.
func Golden(t testing.TB, path, got string, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update): %v", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}
