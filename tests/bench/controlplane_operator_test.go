//go:build bench

package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/tests/cluster"
)

// operatorProc is weft-operator running as a child of the test, so that
// /proc/<pid> accounts its CPU and memory alone.
type operatorProc struct {
	pid                   int
	grpcAddr, metricsAddr string
	debugAddr             string // "" unless profiling
	logPath               string
	started               time.Time
	trustPEM              []byte
	cgroup                string // the cluster's, for the API server's share of CPU

	// The previous phase boundary.
	prevTicks uint64
	prevAt    time.Time
	prevHost  cpuSample
}

// cpPhase is one stretch of the run: the operator's CPU time (user+system,
// /proc/<pid>/stat) and RSS (VmRSS at its end), with the host's and the
// cluster's (API server, etcd, controller manager) CPU beside it.
type cpPhase struct {
	name    string
	wall    time.Duration
	cpu     time.Duration
	rss     uint64
	machine cpuWindow
}

func freeLoopbackAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startOperator runs bin/weft-operator against the cluster's admin
// kubeconfig, serving on loopback, and waits until it is ready (the CA
// loaded, every cache synced, the first set compiled). It is stopped at
// Cleanup (SIGTERM, then SIGKILL after 10 s); its log is kept next to the
// report.
func startOperator(ctx context.Context, tb testing.TB, c *cluster.Cluster, at time.Time, profile bool) *operatorProc {
	tb.Helper()
	op := &operatorProc{grpcAddr: freeLoopbackAddr(tb), metricsAddr: freeLoopbackAddr(tb), cgroup: c.CgroupDir(),
		logPath: cpReportPath(tb, at, "-operator.log")}
	if profile {
		op.debugAddr = freeLoopbackAddr(tb)
	}
	if err := os.MkdirAll(filepath.Dir(op.logPath), 0o755); err != nil {
		tb.Fatal(err)
	}
	logFile, err := os.Create(op.logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(c.BinDir(), "weft-operator"),
		"--kubeconfig", c.Kubeconfig(), "--namespace", cluster.WeftNamespace,
		"--grpc-addr", op.grpcAddr, "--metrics-addr", op.metricsAddr,
		"--log-format", "text", "--log-level", "info", "--debug-addr", op.debugAddr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if op.prevHost, err = sampleCPU(op.cgroup); err != nil {
		tb.Fatal(err)
	}
	op.started, op.prevAt = time.Now(), time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start weft-operator: %v", err)
	}
	op.pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		tb.Logf("weft-operator log: %s", op.logPath)
	})

	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := hc.Get("http://" + op.metricsAddr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			exited <- err
			tb.Fatalf("weft-operator exited before it was ready (%v); log:\n%s", err, tail(op.logPath, 40))
		case <-ctx.Done():
			tb.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("weft-operator not ready after 5 min; log:\n%s", tail(op.logPath, 40))
		}
	}
	tb.Logf("weft-operator ready after %v (pid %d, grpc %s)", time.Since(op.started).Round(time.Millisecond), op.pid, op.grpcAddr)
	secret, err := c.Client.CoreV1().Secrets(cluster.WeftNamespace).Get(ctx, "weft-ca", metav1.GetOptions{})
	if err != nil {
		tb.Fatalf("read the CA Secret the operator created: %v", err)
	}
	op.trustPEM = secret.Data["ca.crt"]
	return op
}

func tail(path string, lines int) string {
	data, _ := os.ReadFile(path)
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

func (op *operatorProc) cpuTicks(tb testing.TB) uint64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", op.pid))
	if err != nil {
		tb.Fatalf("read weft-operator CPU time (did it exit?): %v", err)
	}
	t, err := parseProcStatTimes(string(data))
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// status returns a field of /proc/<pid>/status in bytes (VmRSS, VmHWM).
func (op *operatorProc) status(tb testing.TB, field string) uint64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", op.pid))
	if err != nil {
		tb.Fatalf("read weft-operator memory (did it exit?): %v", err)
	}
	v, err := parseStatusKB(string(data), field)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func parseStatusKB(status, field string) (uint64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s %q: %w", field, v, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/pid/status", field)
}

// phase ends the stretch that began at the previous call (or at the
// operator's start) and returns its figures.
func (op *operatorProc) phase(tb testing.TB, name string) cpPhase {
	tb.Helper()
	ticks := op.cpuTicks(tb)
	host, err := sampleCPU(op.cgroup)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	p := cpPhase{
		name:    name,
		wall:    now.Sub(op.prevAt),
		cpu:     time.Duration(ticks-op.prevTicks) * time.Second / userHZ,
		rss:     op.status(tb, "VmRSS"),
		machine: cpuBetween(op.prevHost, host),
	}
	op.prevTicks, op.prevAt, op.prevHost = ticks, now, host
	tb.Logf("phase %q: %v wall, operator CPU %v, RSS %d MiB; %v", name, p.wall.Round(time.Millisecond), p.cpu, p.rss>>20, p.machine)
	return p
}

// peakRSS is the operator's VmHWM: the most it was resident at any time.
func (op *operatorProc) peakRSS(tb testing.TB) uint64 {
	tb.Helper()
	return op.status(tb, "VmHWM")
}

// compileTimes reads the operator's compile-duration histogram.
func (op *operatorProc) compileTimes(ctx context.Context, tb testing.TB) histogram {
	tb.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+op.metricsAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("scrape weft-operator metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	h, err := parseHistogram(string(body), "weft_operator_compile_duration_seconds")
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// saveProfile fetches a pprof profile (e.g. "heap", "profile?seconds=30")
// into the report directory; nothing when not profiling.
func (op *operatorProc) saveProfile(ctx context.Context, tb testing.TB, at time.Time, profile, name string) {
	tb.Helper()
	if op.debugAddr == "" {
		return
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+op.debugAddr+"/debug/pprof/"+profile, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Errorf("fetch %s profile: %v", profile, err)
		return
	}
	defer resp.Body.Close()
	path := cpReportPath(tb, at, "-"+name+".pprof")
	f, err := os.Create(path)
	if err != nil {
		tb.Errorf("save %s profile: %v", profile, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		tb.Errorf("save %s profile: %v", profile, err)
		return
	}
	tb.Logf("%s profile of weft-operator: %s (go tool pprof bin/weft-operator %s)", name, path, path)
}
