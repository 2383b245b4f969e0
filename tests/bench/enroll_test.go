//go:build bench

package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/tests/cluster"
	"github.com/weftmesh/weft/tests/recordproxy"
)

const runHint = "go test -tags bench -count=1 -timeout 30m -run TestBenchEnroll -v ./tests/bench/ (as root; make bench-enroll)"

// benchConfig is read from the environment, so a quick run can shrink it.
type benchConfig struct {
	sizes         []int         // WEFT_BENCH_SIZES, default "20,200"
	rounds        int           // WEFT_BENCH_ROUNDS (A/B latency rounds), default 3
	window        time.Duration // WEFT_BENCH_WINDOW (one latency window), default 10s
	probeInterval time.Duration // WEFT_BENCH_PROBE_INTERVAL, default 100ms
	maxForeign    float64       // WEFT_BENCH_MAX_FOREIGN_CORES: a window above is disturbed and repeated, default 0.3
	retries       int           // extra attempts of a disturbed latency window, default 2
	out           string        // WEFT_BENCH_OUT: also write the report here
}

func loadBenchConfig(tb testing.TB) benchConfig {
	tb.Helper()
	cfg := benchConfig{
		sizes: []int{20, 200}, rounds: 3, window: 10 * time.Second, probeInterval: 100 * time.Millisecond,
		maxForeign: 0.3, retries: 2, out: os.Getenv("WEFT_BENCH_OUT"),
	}
	if v := os.Getenv("WEFT_BENCH_SIZES"); v != "" {
		cfg.sizes = nil
		for s := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 2 || n%2 != 0 {
				tb.Fatalf("WEFT_BENCH_SIZES=%q: want even pod counts ≥ 2, comma-separated", v)
			}
			cfg.sizes = append(cfg.sizes, n)
		}
	}
	dur := func(key string, d *time.Duration) {
		if v := os.Getenv(key); v != "" {
			var err error
			if *d, err = time.ParseDuration(v); err != nil || *d <= 0 {
				tb.Fatalf("%s=%q: want a positive duration", key, v)
			}
		}
	}
	dur("WEFT_BENCH_WINDOW", &cfg.window)
	dur("WEFT_BENCH_PROBE_INTERVAL", &cfg.probeInterval)
	if v := os.Getenv("WEFT_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			tb.Fatalf("WEFT_BENCH_ROUNDS=%q: want a positive integer", v)
		}
		cfg.rounds = n
	}
	if v := os.Getenv("WEFT_BENCH_MAX_FOREIGN_CORES"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			tb.Fatalf("WEFT_BENCH_MAX_FOREIGN_CORES=%q: want a positive number", v)
		}
		cfg.maxForeign = f
	}
	return cfg
}

// TestBenchEnroll measures, on one 2-node bridge cluster:
//
//  1. the latency of pods weft does not mesh (namespace not labelled),
//     cross-node, 1 KiB POSTs at 1000 qps over 4 connections, without weft
//     (A: nothing of weft in the kernel) and with weft installed (B: the
//     helm chart's agent and the recording proxy), interleaved A B A B …;
//  2. for each size N, the time from labelling a namespace of N running
//     pods (half on each node) to each pod's first connection redirected to
//     the node proxy, and the agent's own weft_agent_enroll_duration_seconds.
//
// Every window records the host's CPU busy time (/proc/stat) and the
// cluster's own share (its cgroup); latency windows disturbed by other
// users of the machine are repeated.
func TestBenchEnroll(t *testing.T) {
	// Compiled only with -tags bench (make bench-enroll): it is a
	// benchmark, not part of make test.
	t.Log("running: " + runHint)
	cfg := loadBenchConfig(t)
	c := cluster.StartForTest(t, cluster.Config{Name: "bench", Nodes: 2, CNI: cluster.CNIBridge})
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Minute)
	defer cancel()
	node0, node1 := c.Nodes()[0], c.Nodes()[1]

	const plainNS = "bench-plain"
	createNamespace(ctx, t, c, plainNS)
	echo := runPod(ctx, t, c, plainNS, appPod("echo", node0, 8080, "echo", "--port", "8080"))
	target := runPod(ctx, t, c, plainNS, appPod("target", node0, 9000, "tcp-echo", "--port", "9000"))
	runPod(ctx, t, c, plainNS, appPod("client", node1, 0, "sleep"))
	url := "http://" + echo.Status.PodIP + ":8080/"

	rep := &report{cfg: cfg}
	// Latency of un-meshed traffic: A (no weft), B (weft installed).
	for round := 1; round <= cfg.rounds; round++ {
		rep.latency = append(rep.latency, latencyWindow(ctx, t, c, cfg, round, "A no weft", url))
		installWeft(ctx, t, c)
		rep.latency = append(rep.latency, latencyWindow(ctx, t, c, cfg, round, "B weft installed", url))
		if round < cfg.rounds {
			uninstallWeft(ctx, t, c)
		}
	}

	// Enrollment, with weft installed (the last B round left it there).
	for _, n := range cfg.sizes {
		rep.enroll = append(rep.enroll, enrollRun(ctx, t, c, cfg, n, target.Status.PodIP+":9000"))
	}

	text := rep.String()
	t.Log("\n" + text)
	fmt.Println(text)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(text), 0o644); err != nil {
			t.Errorf("write report: %v", err)
		}
	}
}

// loadResult is what `weft-testapp load` prints.
type loadResult struct {
	Requests     int      `json:"requests"`
	Errors       int      `json:"errors"`
	P50Millis    float64  `json:"p50Millis"`
	P90Millis    float64  `json:"p90Millis"`
	P99Millis    float64  `json:"p99Millis"`
	MaxMillis    float64  `json:"maxMillis"`
	ActualQPS    float64  `json:"actualQPS"`
	ErrorSamples []string `json:"errorSamples"`
}

type latencyResult struct {
	round    int
	path     string
	res      loadResult
	cpu      cpuWindow
	attempts int      // windows run; only the least disturbed is kept
	rejected []string // the disturbed attempts, for the log
}

// latencyWindow runs one load window from the client pod (node1) to the
// echo pod (node0), repeating it while other users of the machine took more
// than cfg.maxForeign cores; it keeps the least disturbed attempt.
func latencyWindow(ctx context.Context, tb testing.TB, c *cluster.Cluster, cfg benchConfig, round int, path, url string) latencyResult {
	tb.Helper()
	var tries []latencyResult
	for attempt := 1; attempt <= 1+cfg.retries; attempt++ {
		before, err := sampleCPU(c.CgroupDir())
		if err != nil {
			tb.Fatal(err)
		}
		out, err := c.Exec(ctx, "bench-plain", "client", "", appBinary(c), "load", url,
			"--qps", "1000", "--duration", cfg.window.String(), "--payload-size", "1024", "--connections", "4", "--timeout", "2s")
		if err != nil {
			tb.Fatalf("load %s: %v\n%s", url, err, out)
		}
		after, err := sampleCPU(c.CgroupDir())
		if err != nil {
			tb.Fatal(err)
		}
		var res loadResult
		if err := json.Unmarshal(out, &res); err != nil {
			tb.Fatalf("decode load output %q: %v", out, err)
		}
		cur := latencyResult{round: round, path: path, res: res, cpu: cpuBetween(before, after)}
		tb.Logf("round %d %s attempt %d: p50 %.3f p90 %.3f p99 %.3f ms, %d req, %d errors; %s",
			round, path, attempt, res.P50Millis, res.P90Millis, res.P99Millis, res.Requests, res.Errors, cur.cpu)
		tries = append(tries, cur)
		if cur.cpu.ForeignCores <= cfg.maxForeign {
			break
		}
	}
	best := slices.MinFunc(tries, func(a, b latencyResult) int { return cmp.Compare(a.cpu.ForeignCores, b.cpu.ForeignCores) })
	best.attempts = len(tries)
	for _, l := range tries {
		if l.cpu != best.cpu {
			best.rejected = append(best.rejected, fmt.Sprintf("p50 %.3f / p99 %.3f ms with other %.2f cores", l.res.P50Millis, l.res.P99Millis, l.cpu.ForeignCores))
		}
	}
	return best
}

type enrollResult struct {
	n           int
	perNode     map[string]int
	probe       time.Duration
	delays      []time.Duration    // sorted; one per pod that was redirected
	agentDelays []time.Duration    // sorted; label → the agent's "enrolled pod" log line, per pod
	missing     int                // pods never seen redirected before the timeout
	patchTook   time.Duration      // the label PATCH round trip
	cpu         cpuWindow          // label → last pod redirected
	startup     time.Duration      // creating the pods until all ran
	agent       histogram          // weft_agent_enroll_duration_seconds, this run's observations, both nodes
	enrolledNow float64            // weft_agent_enrolled_pods, both nodes, after
	weftCores   map[string]float64 // "agent", "proxy": cores used in the window, both nodes
}

// weftPodCgroups returns the cgroup directories of weft's pods (the agents
// and the recording proxies), by "agent" or "proxy".
func weftPodCgroups(ctx context.Context, tb testing.TB, c *cluster.Cluster) map[string][]string {
	tb.Helper()
	pods, err := c.Client.CoreV1().Pods(installNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]string{}
	for _, p := range pods.Items {
		app := "agent"
		if p.Labels["app"] == "weft-recordproxy" {
			app = "proxy"
		}
		out[app] = append(out[app], filepath.Join(c.CgroupDir(), p.Spec.NodeName, "kubepods", "pod"+string(p.UID)))
	}
	return out
}

// cgroupsUsage sums cpu.stat usage_usec over each group's cgroups; a cgroup
// that cannot be read counts as zero.
func cgroupsUsage(groups map[string][]string) map[string]uint64 {
	out := map[string]uint64{}
	for app, dirs := range groups {
		for _, d := range dirs {
			u, _ := cgroupUsage(filepath.Join(d, "cpu.stat"))
			out[app] += u
		}
	}
	return out
}

// enrollRun creates n prober pods (half per node) in a fresh namespace,
// waits for them to run, labels the namespace and measures, per pod, the
// time from the label to the first of its connections the recording proxy
// accepted. Each prober opens a new TCP connection to target every
// cfg.probeInterval, so the measured time includes up to one interval of
// probing delay. The namespace is deleted afterwards.
func enrollRun(ctx context.Context, tb testing.TB, c *cluster.Cluster, cfg benchConfig, n int, target string) enrollResult {
	tb.Helper()
	ns := fmt.Sprintf("enroll-%d", n)
	createNamespace(ctx, tb, c, ns)
	res := enrollResult{n: n, perNode: map[string]int{}, probe: cfg.probeInterval}
	host, port, _ := strings.Cut(target, ":")
	// bash only: a connect and close per iteration through /dev/tcp, and a
	// read timeout on a pipe that never carries data as the sleep, so an
	// iteration forks nothing (200 pods forking 10 times a second would be
	// the benchmark's own load).
	// tcp_syn_retries is per netns: a connect whose SYN is lost gives up
	// after 3 s instead of stalling the probe for 2 minutes.
	script := `echo 1 > /proc/sys/net/ipv4/tcp_syn_retries
exec 4< <(exec /bin/sleep infinity)
while :; do
  { : 3<>"/dev/tcp/$TARGET_HOST/$TARGET_PORT"; } 2>/dev/null
  read -t "$PROBE_INTERVAL" -u 4 _
  [ $? -gt 128 ] || exit 1
done`
	began := time.Now()
	for i, node := range c.Nodes() {
		replicas := int32(n / len(c.Nodes()))
		if i == 0 {
			replicas += int32(n % len(c.Nodes()))
		}
		labels := map[string]string{"app": "prober", "node": node}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "prober-" + node},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(replicas),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
						TerminationGracePeriodSeconds: ptr.To[int64](1),
						Containers: []corev1.Container{{
							Name: "probe", Image: cluster.TestAppImage + ":dev",
							Command: []string{"/bin/bash", "-c", script},
							Env: []corev1.EnvVar{
								{Name: "TARGET_HOST", Value: host}, {Name: "TARGET_PORT", Value: port},
								{Name: "PROBE_INTERVAL", Value: strconv.FormatFloat(cfg.probeInterval.Seconds(), 'f', 3, 64)},
							},
						}},
					},
				},
			},
		}
		if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			tb.Fatalf("create deployment %s/%s: %v", ns, d.Name, err)
		}
	}
	uids := map[string]string{}  // pod UID → node
	names := map[string]string{} // pod UID → name
	err := cluster.Poll(ctx, time.Duration(n)*3*time.Second+time.Minute, time.Second, fmt.Sprintf("%d prober pods running", n), func(ctx context.Context) (bool, string, error) {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=prober"})
		if err != nil {
			return false, err.Error(), nil
		}
		clear(uids)
		clear(names)
		phases := map[corev1.PodPhase]int{}
		for i := range pods.Items {
			p := &pods.Items[i]
			phases[p.Status.Phase]++
			if podUp(p) && p.DeletionTimestamp == nil {
				uids[string(p.UID)] = p.Spec.NodeName
				names[string(p.UID)] = p.Name
			}
		}
		return len(uids) == n && len(pods.Items) == n, fmt.Sprintf("%d/%d running, phases %v", len(uids), n, phases), nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	res.startup = time.Since(began)
	for _, node := range uids {
		res.perNode[node]++
	}
	tb.Logf("enroll-%d: %d pods running after %s (%v)", n, n, res.startup.Round(time.Millisecond), res.perNode)
	waitQuiet(ctx, tb, c)

	var tails []*recordTail
	for _, node := range c.Nodes() {
		tail, err := newRecordTail(c, node)
		if err != nil {
			tb.Fatal(err)
		}
		tails = append(tails, tail)
	}
	before := agentHistogram(ctx, tb, c)

	weftPods := weftPodCgroups(ctx, tb, c)
	weft0 := cgroupsUsage(weftPods)
	cpu0, err := sampleCPU(c.CgroupDir())
	if err != nil {
		tb.Fatal(err)
	}
	labelled := time.Now()
	if err := labelNamespace(ctx, c, ns, `"enabled"`); err != nil {
		tb.Fatal(err)
	}
	res.patchTook = time.Since(labelled)
	first := map[string]time.Time{}
	var bad []recordproxy.Record
	err = cluster.Poll(ctx, time.Minute+time.Duration(n)*600*time.Millisecond, 50*time.Millisecond, fmt.Sprintf("%d pods redirected", n), func(ctx context.Context) (bool, string, error) {
		for _, tail := range tails {
			recs, err := tail.next()
			if err != nil {
				return false, "", err
			}
			for _, r := range recs {
				if r.Listener != recordproxy.ListenerOutbound || uids[r.PodUID] == "" {
					continue
				}
				if r.OrigDst != target && len(bad) < 5 {
					bad = append(bad, r)
				}
				if _, seen := first[r.PodUID]; !seen {
					first[r.PodUID] = r.Time
				}
			}
		}
		return len(first) == n, fmt.Sprintf("%d/%d redirected", len(first), n), nil
	})
	cpu1, cerr := sampleCPU(c.CgroupDir())
	if cerr != nil {
		tb.Fatal(cerr)
	}
	res.cpu = cpuBetween(cpu0, cpu1)
	res.weftCores = map[string]float64{}
	for app, usec := range cgroupsUsage(weftPods) {
		res.weftCores[app] = float64(usec-weft0[app]) / 1e6 / res.cpu.Seconds
	}
	if err != nil {
		tb.Errorf("enroll-%d: %v", n, err)
	}
	for _, r := range bad {
		tb.Errorf("enroll-%d: redirected connection with original destination %q, want %q: %+v", n, r.OrigDst, target, r)
	}
	res.missing = n - len(first)
	for _, at := range first {
		res.delays = append(res.delays, at.Sub(labelled))
	}
	slices.Sort(res.delays)
	agentDone, err := agentEnrollTimes(c, ns)
	if err != nil {
		tb.Errorf("enroll-%d: %v", n, err)
	}
	for uid, name := range names {
		if at, ok := agentDone[name]; ok {
			res.agentDelays = append(res.agentDelays, at.Sub(labelled))
		}
		if _, ok := first[uid]; !ok {
			at, ok := agentDone[name]
			tb.Logf("enroll-%d: pod %s (%s) never seen redirected; agent logged it enrolled: %v at label+%s", n, name, uids[uid], ok, at.Sub(labelled).Round(time.Millisecond))
		}
	}
	slices.Sort(res.agentDelays)

	// The agent observes each enrollment when it is done; the probes may see
	// redirection a moment before the last observation is counted.
	err = cluster.Poll(ctx, 30*time.Second, 200*time.Millisecond, "agent enroll observations", func(ctx context.Context) (bool, string, error) {
		res.agent = agentHistogram(ctx, tb, c).add(before, -1)
		return res.agent.count >= float64(len(first)), fmt.Sprintf("%.0f observations", res.agent.count), nil
	})
	if err != nil {
		tb.Errorf("enroll-%d: %v", n, err)
	}
	for _, node := range c.Nodes() {
		text, err := scrapeAgent(ctx, c, node)
		if err != nil {
			tb.Fatal(err)
		}
		res.enrolledNow += gauge(text, "weft_agent_enrolled_pods")
	}
	tb.Logf("enroll-%d: %d/%d redirected, p50 %s p99 %s max %s ms; agent p50 %.1f ms; %s", n, len(first), n,
		ms(percentile(res.delays, 50)), ms(percentile(res.delays, 99)), ms(percentile(res.delays, 100)), 1000*res.agent.quantile(0.5), res.cpu)
	deleteNamespace(ctx, tb, c, ns)
	return res
}

// agentEnrollTimes reads the agents' logs (the emulator keeps container
// output under the node root, as a kubelet does) and returns, by pod name,
// when an agent logged "enrolled pod" for a pod of namespace ns: the
// agent's side of the enrollment, independent of the probes.
func agentEnrollTimes(c *cluster.Cluster, ns string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	for _, node := range c.Nodes() {
		files, err := filepath.Glob(filepath.Join(c.NodeRoot(node), "var", "log", "pods", installNS+"_weft-agent-*", "agent", "*.log"))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read agent log: %w", err)
			}
			for line := range strings.SplitSeq(string(data), "\n") {
				var l struct {
					Time time.Time `json:"time"`
					Msg  string    `json:"msg"`
					Pod  string    `json:"pod"`
				}
				if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "enrolled pod" {
					continue
				}
				if name, ok := strings.CutPrefix(l.Pod, ns+"/"); ok {
					out[name] = l.Time
				}
			}
		}
	}
	return out, nil
}

// agentHistogram sums weft_agent_enroll_duration_seconds over every node.
func agentHistogram(ctx context.Context, tb testing.TB, c *cluster.Cluster) histogram {
	tb.Helper()
	var sum histogram
	for _, node := range c.Nodes() {
		text, err := scrapeAgent(ctx, c, node)
		if err != nil {
			tb.Fatal(err)
		}
		h, err := parseHistogram(text, "weft_agent_enroll_duration_seconds")
		if err != nil {
			tb.Fatal(err)
		}
		sum = sum.add(h, 1)
	}
	return sum
}

func gauge(text, name string) float64 {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return math.NaN()
}

// waitQuiet waits (up to 30 s) until the host is less than 70% busy over a
// second, so the pod creation storm does not spill into the measurement.
func waitQuiet(ctx context.Context, tb testing.TB, c *cluster.Cluster) {
	tb.Helper()
	prev, err := sampleCPU(c.CgroupDir())
	if err != nil {
		tb.Fatal(err)
	}
	var last cpuWindow
	err = cluster.Poll(ctx, 30*time.Second, time.Second, "host below 70% busy", func(context.Context) (bool, string, error) {
		cur, err := sampleCPU(c.CgroupDir())
		if err != nil {
			return false, "", err
		}
		if cur.at.Sub(prev.at) < 500*time.Millisecond {
			return false, "first sample", nil
		}
		last, prev = cpuBetween(prev, cur), cur
		return last.HostBusyPct < 70, last.String(), nil
	})
	if err != nil {
		tb.Logf("measuring anyway: %v", err)
	}
}

type report struct {
	cfg     benchConfig
	latency []latencyResult
	enroll  []enrollResult
}

func (r *report) String() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("## weft bench-enroll (%s)", time.Now().UTC().Format(time.RFC3339))
	p("")
	p("### Latency of un-meshed pods, cross-node, 1 KiB POST @1000 qps, 4 connections, %s windows", r.cfg.window)
	p("")
	p("| round | path | p50 ms | p90 ms | p99 ms | max ms | qps | errors | host busy | cluster cores | other cores | attempts |")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|")
	byPath := map[string][]latencyResult{}
	var paths []string
	for _, l := range r.latency {
		if _, ok := byPath[l.path]; !ok {
			paths = append(paths, l.path)
		}
		byPath[l.path] = append(byPath[l.path], l)
		p("| %d | %s | %.3f | %.3f | %.3f | %.3f | %.0f | %d | %.0f%% | %.2f | %.2f | %d |", l.round, l.path,
			l.res.P50Millis, l.res.P90Millis, l.res.P99Millis, l.res.MaxMillis, l.res.ActualQPS, l.res.Errors,
			l.cpu.HostBusyPct, l.cpu.ClusterCores, l.cpu.ForeignCores, l.attempts)
	}
	p("")
	p("| path | median p50 ms | median p90 ms | median p99 ms |")
	p("|---|---|---|---|")
	pick := func(ls []latencyResult, f func(loadResult) float64) []float64 {
		var xs []float64
		for _, l := range ls {
			xs = append(xs, f(l.res))
		}
		return xs
	}
	p50 := func(x loadResult) float64 { return x.P50Millis }
	p90 := func(x loadResult) float64 { return x.P90Millis }
	p99 := func(x loadResult) float64 { return x.P99Millis }
	for _, path := range paths {
		ls := byPath[path]
		p("| %s | %.3f | %.3f | %.3f |", path, median(pick(ls, p50)), median(pick(ls, p90)), median(pick(ls, p99)))
	}
	if len(paths) == 2 {
		a, bb := byPath[paths[0]], byPath[paths[1]]
		var d50, d90, d99 []float64
		for i := range min(len(a), len(bb)) {
			d50 = append(d50, bb[i].res.P50Millis-a[i].res.P50Millis)
			d90 = append(d90, bb[i].res.P90Millis-a[i].res.P90Millis)
			d99 = append(d99, bb[i].res.P99Millis-a[i].res.P99Millis)
		}
		p("| **added by weft (B−A, median of per-round pairs)** | %+.3f | %+.3f | %+.3f |", median(d50), median(d90), median(d99))
	}
	for _, l := range r.latency {
		if len(l.rejected) > 0 {
			p("")
			p("Round %d %s: disturbed attempts rejected: %s.", l.round, l.path, strings.Join(l.rejected, "; "))
		}
	}
	p("")
	p("### Enrollment: namespace label → each pod's first redirected connection (goal p99 ≤ 1 s)")
	p("")
	p("| pods | per node | redirected | p50 ms | p90 ms | p99 ms | max ms | agent logged enrolled p50 / p99 / max ms (n) | agent enroll_duration p50 / p99 / mean ms (n) | enrolled gauge | label PATCH ms | host busy | cluster cores (agents, proxies) | other cores | pods start s |")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, e := range r.enroll {
		var nodes []string
		for node, k := range e.perNode {
			nodes = append(nodes, fmt.Sprintf("%s:%d", node, k))
		}
		slices.Sort(nodes)
		mean := math.NaN()
		if e.agent.count > 0 {
			mean = e.agent.sum / e.agent.count
		}
		p("| %d | %s | %d/%d | %s | %s | %s | %s | %s / %s / %s (%d) | %.1f / %.1f / %.1f (%.0f) | %.0f | %s | %.0f%% | %.2f (%.2f, %.2f) | %.2f | %.0f |", e.n, strings.Join(nodes, " "),
			len(e.delays), e.n, ms(percentile(e.delays, 50)), ms(percentile(e.delays, 90)), ms(percentile(e.delays, 99)), ms(percentile(e.delays, 100)),
			ms(percentile(e.agentDelays, 50)), ms(percentile(e.agentDelays, 99)), ms(percentile(e.agentDelays, 100)), len(e.agentDelays),
			1000*e.agent.quantile(0.5), 1000*e.agent.quantile(0.99), 1000*mean, e.agent.count, e.enrolledNow,
			ms(e.patchTook), e.cpu.HostBusyPct, e.cpu.ClusterCores, e.weftCores["agent"], e.weftCores["proxy"], e.cpu.ForeignCores, e.startup.Seconds())
	}
	p("")
	p("Probe: each pod opens a new TCP connection every %s, so label→redirect times include up to one interval (mean half) of probing delay.", r.cfg.probeInterval)
	p("\"Agent logged enrolled\": label → the agent's \"enrolled pod\" log line (probe-independent). enroll_duration is the agent's histogram, which times only the handoff and redirect, not the /proc scan and checks before them.")
	p("Agent enroll quantiles are interpolated in the histogram's buckets (0.5 ms × 2^k).")
	return b.String()
}
