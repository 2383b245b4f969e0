//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/tests/cluster"
)

const cpRunHint = "go test -tags bench -count=1 -timeout 30m -run TestBenchControlPlane -v ./tests/bench/ (as root; make bench-controlplane)"

// cpConfig is read from the environment.
type cpConfig struct {
	nodes   int    // WEFT_BENCH_CP_NODES: simulated nodes, each with one stream client (default 100)
	pods    int    // WEFT_BENCH_CP_PODS: pods spread over them (default 10000)
	repeats int    // WEFT_BENCH_CP_REPEATS: changes of each kind measured (default 30, at least 20)
	out     string // WEFT_BENCH_CP_OUT: the report file, default .cache/bench/controlplane-<time>.md
	// profile (WEFT_BENCH_CP_PROFILE=1) saves the operator's heap profile
	// once the nodes synced and a CPU profile of the changes, next to the
	// report.
	profile bool
}

func loadCPConfig(tb testing.TB) cpConfig {
	tb.Helper()
	cfg := cpConfig{nodes: 100, pods: 10000, repeats: 30, out: os.Getenv("WEFT_BENCH_CP_OUT"), profile: os.Getenv("WEFT_BENCH_CP_PROFILE") == "1"}
	num := func(key string, v *int, least int) {
		if s := os.Getenv(key); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < least {
				tb.Fatalf("%s=%q: want an integer ≥ %d", key, s, least)
			}
			*v = n
		}
	}
	num("WEFT_BENCH_CP_NODES", &cfg.nodes, 1)
	num("WEFT_BENCH_CP_PODS", &cfg.pods, cpNamespaces)
	num("WEFT_BENCH_CP_REPEATS", &cfg.repeats, 20)
	if cfg.nodes > 250 {
		tb.Fatalf("WEFT_BENCH_CP_NODES=%d: at most 250 (one pod /24 each)", cfg.nodes)
	}
	if cfg.pods/cfg.nodes+cfg.repeats+2 > 254 {
		tb.Fatalf("%d pods on %d nodes plus %d added: more than a /24 per node", cfg.pods, cfg.nodes, cfg.repeats)
	}
	return cfg
}

// TestBenchControlPlane measures weft-operator at scale on the local
// cluster's real API server: cfg.pods pods (API objects only: bound to
// cfg.nodes simulated Node objects that no node emulator owns, their status
// and IP written through the status subresource, never run), Services with
// the EndpointSlices the controller manager derives, SMI ttResource, and
// one config-stream client per simulated node, authenticated with a real
// pod-bound token of the node proxy's ServiceAccount (TokenRequest bound to
// a pod on that node; the operator reviews it with TokenReview).
//
// The operator runs as a subprocess (bin/weft-operator against the admin
// kubeconfig, gRPC and metrics on loopback), so its CPU time and RSS are its
// own. Measured, each repeated cfg.repeats times: from a TrafficTarget
// update to every node having applied (and ACKed) the changed policy, and
// from a new pod's IP being written to every node having applied its
// workload. A missed goal is reported, not a failure; a change that does
// not reach every node within 30 s fails the benchmark.
func TestBenchControlPlane(t *testing.T) {
	t.Log("running: " + cpRunHint)
	cfg := loadCPConfig(t)
	c := cluster.StartForTest(t, cluster.Config{Name: "bench-cp", Nodes: 1, SkipDNS: true, SkipKubeProxy: true})
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	rep := &cpReport{cfg: cfg, started: time.Now()}

	b := newCPBench(ctx, t, c, cfg)
	began := time.Now()
	b.populate(ctx, t)
	rep.populate = time.Since(began)
	t.Logf("populated %d nodes, %d pods, %d services in %v", cfg.nodes, cfg.pods, cpNamespaces*cpServicesPerNS, rep.populate.Round(time.Second))

	op := startOperator(ctx, t, c, rep.started, cfg.profile)
	rep.operatorLog = op.logPath
	rep.phases = append(rep.phases, op.phase(t, "start → ready (initial list, CA, first compile)"))

	b.connect(ctx, t, op)
	rep.phases = append(rep.phases, op.phase(t, fmt.Sprintf("%d nodes connect and sync", cfg.nodes)))
	rep.resources = b.heldResources()
	op.saveProfile(ctx, t, rep.started, "heap", "heap-synced")
	var profiling sync.WaitGroup
	if cfg.profile {
		// Long enough for both kinds of change.
		profiling.Go(func() { op.saveProfile(ctx, t, rep.started, "profile?seconds=45", "cpu-changes") })
	}

	for i := range cfg.repeats {
		rep.trafficTarget = append(rep.trafficTarget, b.changeTrafficTarget(ctx, t, i))
	}
	rep.phases = append(rep.phases, op.phase(t, fmt.Sprintf("%d TrafficTarget changes", cfg.repeats)))
	b.checkTrafficTargetStatus(ctx, t, fmt.Sprintf("client-%d", cfg.repeats-1))

	for i := range cfg.repeats {
		rep.podAdd = append(rep.podAdd, b.addPod(ctx, t, i))
	}
	rep.phases = append(rep.phases, op.phase(t, fmt.Sprintf("%d pod adds", cfg.repeats)))
	profiling.Wait()
	rep.peakRSS = op.peakRSS(t)
	rep.compile = op.compileTimes(ctx, t)

	text := rep.String()
	t.Log("\n" + text)
	fmt.Println(text)
	out := cfg.out
	if out == "" {
		out = cpReportPath(t, rep.started, ".md")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatalf("create report dir: %v", err)
	}
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		t.Fatalf("write report: %v", err)
	}
	fmt.Println("bench-controlplane report written to " + out)
}

// cpReportPath is .cache/bench/controlplane-<UTC time><suffix> in the
// repository (or under $WEFT_CACHE).
func cpReportPath(tb testing.TB, at time.Time, suffix string) string {
	tb.Helper()
	l4 := defaultReportPath(tb, at)
	return filepath.Join(filepath.Dir(l4), "controlplane-"+at.UTC().Format("20060102T150405Z")+suffix)
}

// change is one measured change: how long until the first and the last
// node applied it.
type change struct {
	first, all time.Duration
}

func (b *cpBench) waitAll(ctx context.Context, tb testing.TB, what string, t0 time.Time) change {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		hits, missing := b.hits()
		if len(missing) == 0 {
			slices.SortFunc(hits, func(a, b time.Time) int { return a.Compare(b) })
			return change{first: hits[0].Sub(t0), all: hits[len(hits)-1].Sub(t0)}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %d of %d nodes did not apply it within 30s (e.g. %v)", what, len(missing), len(b.views), missing[:min(5, len(missing))])
		}
		select {
		case <-ctx.Done():
			tb.Fatal(ctx.Err())
		case <-tick.C:
		}
	}
}

// settle waits until every node holds the same set and nothing has changed
// for a moment, so that one measurement does not start inside the previous
// one's follow-up changes (an EndpointSlice update after a pod add).
func (b *cpBench) settle(ctx context.Context, tb testing.TB) {
	tb.Helper()
	const quiet = 300 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	var last string
	since := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		v, same := b.commonVersion()
		switch {
		case !same || v != last:
			last, since = v, time.Now()
		case time.Since(since) >= quiet:
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nodes did not settle on one set within 30s (last %q, same %v)", v, same)
		}
		select {
		case <-ctx.Done():
			tb.Fatal(ctx.Err())
		case <-tick.C:
		}
	}
}

func readyPodStatus(ip, hostIP string) corev1.PodStatus {
	now := metav1.Now()
	return corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: hostIP,
		HostIPs: []corev1.HostIP{{IP: hostIP}}, StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
	}
}
