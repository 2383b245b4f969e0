package preflight

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/bpf/redirect"
)

// requirePrivileged skips without root, but fails when CI asks for the
// privileged tests (WEFT_REQUIRE_PRIVILEGED=1): a skip must not look like a
// pass.
func requirePrivileged(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WEFT_REQUIRE_PRIVILEGED") == "1" {
		t.Fatal("needs root (WEFT_REQUIRE_PRIVILEGED=1)")
	}
	t.Skip("needs root")
}

// bpffsPinRoot returns a directory on a bpffs: /sys/fs/bpf when it is one
// and useDefault, else a bpffs mounted on a temp dir for the test.
func bpffsPinRoot(t *testing.T, useDefault bool) string {
	t.Helper()
	if m, err := statfsMagic(DefaultPinRoot); useDefault && err == nil && m == bpffsMagic {
		return DefaultPinRoot
	}
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
	return dir
}

// TestRunOnHost runs every real check on this machine (kernel 6.18 with BTF,
// root, hybrid cgroup2): every kernel and host check must pass, and the
// NetworkPolicy check, without cluster access, skips.
func TestRunOnHost(t *testing.T) {
	requirePrivileged(t)
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in-cluster
	pinRoot := bpffsPinRoot(t, true)
	report := Run(t.Context(), Options{PinRoot: pinRoot + "/weft-preflight-test"})

	wantNames := []string{"privileges", "kernel", "btf", "cgroup2", "bpffs", "cgroup_sock_addr", "sock_ops", "sched_cls", "helpers", "tcx", "load", "networkpolicy"}
	if len(report.Checks) != len(wantNames) {
		t.Fatalf("Run returned %d checks, want %d (%q)", len(report.Checks), len(wantNames), wantNames)
	}
	for i, c := range report.Checks {
		want := StatusPass
		if c.Name == "networkpolicy" {
			want = StatusSkip
		}
		if c.Name != wantNames[i] || c.Status != want {
			t.Errorf("check %d = %+v; want %s to %s", i, c, wantNames[i], want)
		}
		t.Logf("%s %s: %s", c.Status, c.Name, c.Detail)
	}
	if !report.OK || report.ExitCode() != 0 {
		t.Errorf("report OK = %v, exit %d; want OK, exit 0", report.OK, report.ExitCode())
	}
	if _, err := os.Stat(pinRoot + "/weft-preflight-test"); !os.IsNotExist(err) {
		t.Errorf("Run created the pin dir (stat: %v); checks must not write", err)
	}

	// The cgroup2 check names the mount bpf/redirect attaches to.
	root, err := redirect.Cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	if got := checkCgroup2Host(); !strings.HasPrefix(got.Detail, "cgroup2 at "+root+" (") {
		t.Errorf("checkCgroup2Host() = %q; want it to name %s, bpf/redirect's Cgroup2Root", got.Detail, root)
	}
}

// TestBPFFSOnHost: the real statfs tells a bpffs (one mounted for the test)
// from another filesystem.
func TestBPFFSOnHost(t *testing.T) {
	requirePrivileged(t)
	if got := checkBPFFS(bpffsPinRoot(t, false)+"/not/yet", statfsMagic); got.Status != StatusPass {
		t.Errorf("checkBPFFS(bpffs) = %+v, want pass", got)
	}
	if got := checkBPFFS(t.TempDir(), statfsMagic); got.Status != StatusFail {
		t.Errorf("checkBPFFS(temp dir) = %+v, want fail", got)
	}
}

func TestProbeOutcome(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    Status
		wantWhy string
	}{
		{name: "supported", err: nil, want: StatusPass},
		{name: "not supported", err: fmt.Errorf("probe: %w", ebpf.ErrNotSupported), want: StatusFail, wantWhy: "not supported"},
		{name: "unprivileged", err: fmt.Errorf("load program: %w", unix.EPERM), want: StatusSkip, wantWhy: "not probed: operation not permitted"},
		{name: "verifier log cut to one line", err: errors.New("load program: permission denied:\n0: R1=ctx\n1: invalid"), want: StatusFail, wantWhy: "load program: permission denied: …"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, why := probeOutcome(tt.err); got != tt.want || why != tt.wantWhy {
				t.Errorf("probeOutcome(%v) = %s, %q; want %s, %q", tt.err, got, why, tt.want, tt.wantWhy)
			}
		})
	}
}
