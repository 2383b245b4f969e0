package preflight

import (
	"context"
	"strings"
	"time"
)

// Status is the outcome of one check.
type Status string

// The statuses of a check. Only StatusFail makes a Report fail.
const (
	StatusPass Status = "pass"
	StatusWarn Status = "warn" // works, with a limitation the Detail names
	StatusFail Status = "fail" // weft's datapath cannot run
	StatusSkip Status = "skip" // not checked (no input, or a prerequisite failed)
)

// Result is the outcome of one check. It is a plain value.
type Result struct {
	// Name identifies the check ("kernel", "bpffs", …); stable for scripts.
	Name string `json:"name"`
	// Status is the outcome.
	Status Status `json:"status"`
	// Detail says why, with the measured value ("kernel 6.18.44").
	Detail string `json:"detail"`
	// Hint says what to do when the check did not pass.
	Hint string `json:"hint,omitempty"`
}

// Summary counts results by status. It is a plain value.
type Summary struct {
	Pass int `json:"pass"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
}

// Report is the outcome of a Run. It is a plain value.
type Report struct {
	// OK is true when no check failed (warnings and skips do not fail).
	OK      bool     `json:"ok"`
	Summary Summary  `json:"summary"`
	Checks  []Result `json:"checks"`
}

// NewReport aggregates results.
func NewReport(results []Result) Report {
	r := Report{Checks: results}
	for _, c := range results {
		switch c.Status {
		case StatusPass:
			r.Summary.Pass++
		case StatusWarn:
			r.Summary.Warn++
		case StatusSkip:
			r.Summary.Skip++
		default: // StatusFail, and anything unknown: never report an unknown status as OK
			r.Summary.Fail++
		}
	}
	r.OK = r.Summary.Fail == 0
	return r
}

// ExitCode is the process exit code for r: 0 when nothing failed, 1 when a
// check failed. (2, bad usage, is the CLI's.)
func (r Report) ExitCode() int {
	if r.OK {
		return 0
	}
	return 1
}

// DefaultPinRoot is the default filesystem for weft's pins.
const DefaultPinRoot = "/sys/fs/bpf"

// Options configure Run. They are plain values.
type Options struct {
	// PinRoot is where the agent pins programs, maps and links; it (or its
	// nearest existing parent) must be on a bpffs. Empty means DefaultPinRoot.
	PinRoot string
	// Kubeconfig is the path of a kubeconfig for the NetworkPolicy check.
	// Empty means the in-cluster config when running in a pod, else the
	// check is skipped.
	Kubeconfig string
	// APITimeout bounds the API server requests; zero means 10s.
	APITimeout time.Duration
}

// Run runs every check, in a fixed order, and reports them all: a failing
// check never hides the others. Checks only read: Run creates nothing on the
// host (no pin dir, no mount) and releases what it loads. It is safe to call
// from several goroutines, though the probes are meant to run one at a time.
func Run(ctx context.Context, opts Options) Report {
	if opts.PinRoot == "" {
		opts.PinRoot = DefaultPinRoot
	}
	if opts.APITimeout == 0 {
		opts.APITimeout = 10 * time.Second
	}
	results := []Result{
		checkPrivilegesHost(),
		checkKernelHost(),
		checkBTF(btfPath),
		checkCgroup2Host(),
		checkBPFFS(opts.PinRoot, statfsMagic),
	}
	results = append(results, checkBPF()...)
	results = append(results, checkNetworkPoliciesHost(ctx, opts))
	return NewReport(results)
}

// oneLine keeps the first line of a (possibly multi-line, verifier log) error.
func oneLine(s string) string {
	line, _, cut := strings.Cut(s, "\n")
	if cut {
		return line + " …"
	}
	return line
}
