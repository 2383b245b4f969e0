package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/preflight"
)

// TestUsage runs the CLI in-process on arguments that never reach the
// checks: usage errors exit 2 and name the offending input.
func TestUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
	}{
		{name: "unknown check flag", args: []string{"check", "--bogus"}, wantCode: exitUsage, wantStderr: "weft: unknown flag: --bogus\nRun 'weft check --help' for usage.\n"},
		{name: "unknown shorthand", args: []string{"check", "-z"}, wantCode: exitUsage, wantStderr: "unknown shorthand flag: 'z' in -z"},
		{name: "unknown root flag", args: []string{"--bogus"}, wantCode: exitUsage, wantStderr: "unknown flag: --bogus"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: `unknown command "frobnicate" for "weft"`},
		{name: "stray argument", args: []string{"check", "extra"}, wantCode: exitUsage, wantStderr: `unknown command "extra" for "weft check"`},
		{name: "bad output format", args: []string{"check", "-o", "yaml"}, wantCode: exitUsage, wantStderr: `invalid --output "yaml": want text or json`},
		{name: "bad duration", args: []string{"check", "--timeout", "soon"}, wantCode: exitUsage, wantStderr: `invalid argument "soon" for "--timeout"`},
		{name: "version", args: []string{"version"}, wantCode: exitOK, wantStdout: "weft dev (" + runtime.Version() + " "},
		{name: "help", args: []string{"--help"}, wantCode: exitOK, wantStdout: "check       Check that this node's kernel"},
		{name: "no arguments prints help", args: nil, wantCode: exitOK, wantStdout: "Available Commands:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, &stdout, &stderr)
			if code != tt.wantCode || !strings.Contains(stdout.String(), tt.wantStdout) || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("weft %q = exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr containing %q",
					tt.args, code, stdout.String(), stderr.String(), tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

// TestBinary builds the real binary (with the version set by ldflags) and
// runs it as a user would.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "weft")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v0.0.0-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	weft := func(t *testing.T, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "KUBERNETES_SERVICE_HOST=") // never in-cluster
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatalf("run weft %q: %v", args, err)
		}
		return o.String(), e.String(), code
	}

	t.Run("check json", func(t *testing.T) {
		stdout, stderr, code := weft(t, "check", "-o", "json")
		var report preflight.Report
		if err := json.Unmarshal([]byte(stdout), &report); err != nil {
			t.Fatalf("weft check -o json: parse %q: %v (stderr %q)", stdout, err, stderr)
		}
		var names []string
		failed := false
		for _, c := range report.Checks {
			names = append(names, c.Name)
			failed = failed || c.Status == preflight.StatusFail
			if c.Detail == "" || c.Status != preflight.StatusPass && c.Hint == "" {
				t.Errorf("check %+v: want a detail, and a hint unless it passed", c)
			}
		}
		want := []string{"privileges", "kernel", "btf", "cgroup2", "bpffs", "cgroup_sock_addr", "sock_ops", "sched_cls", "helpers", "tcx", "load", "networkpolicy"}
		if !slices.Equal(names, want) {
			t.Errorf("weft check -o json checks = %q, want %q", names, want)
		}
		if wantCode := map[bool]int{false: 0, true: 1}[failed]; code != wantCode || report.OK == failed {
			t.Errorf("weft check -o json = exit %d, ok %v; want exit %d with any check failed = %v", code, report.OK, wantCode, failed)
		}
		if os.Geteuid() == 0 && report.Checks[0].Status != preflight.StatusPass {
			t.Errorf("privileges as root = %+v, want pass", report.Checks[0])
		}
	})
	t.Run("check text", func(t *testing.T) {
		stdout, _, code := weft(t, "check", "--pin-root", t.TempDir())
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 13 || !strings.HasPrefix(lines[4], "✘ bpffs ") || code != 1 {
			t.Errorf("weft check --pin-root <not a bpffs> = exit %d,\n%s\nwant 12 checks and a summary, bpffs failing, exit 1", code, stdout)
		}
	})
	t.Run("bogus flag", func(t *testing.T) {
		stdout, stderr, code := weft(t, "check", "--bogus")
		if code != 2 || stdout != "" || !strings.Contains(stderr, "unknown flag: --bogus") {
			t.Errorf("weft check --bogus = exit %d, stdout %q, stderr %q; want exit 2 and an error naming --bogus", code, stdout, stderr)
		}
	})
	t.Run("version", func(t *testing.T) {
		stdout, _, code := weft(t, "version")
		if want := "weft v0.0.0-test (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"; code != 0 || stdout != want {
			t.Errorf("weft version = exit %d, %q; want exit 0, %q", code, stdout, want)
		}
	})
}
