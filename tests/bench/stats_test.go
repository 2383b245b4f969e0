//go:build bench

package bench

import (
	"bufio"
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or 0 when it is empty (the rule testapp's load uses).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Microseconds())/1000) }

// cpuSample is a point-in-time reading of the host's CPU time (/proc/stat,
// all CPUs) and of the cluster cgroup's CPU usage.
type cpuSample struct {
	at                time.Time
	busyTicks, ticks  uint64 // host, in USER_HZ ticks
	clusterUsageMicro uint64 // cpu.stat usage_usec of the cluster's cgroup
}

// userHZ is the kernel's USER_HZ, the unit of /proc/stat on Linux.
const userHZ = 100

func sampleCPU(clusterCgroup string) (cpuSample, error) {
	s := cpuSample{at: time.Now()}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	s.busyTicks, s.ticks, err = parseProcStatCPU(line)
	if err != nil {
		return s, err
	}
	s.clusterUsageMicro, err = cgroupUsage(filepath.Join(clusterCgroup, "cpu.stat"))
	return s, err
}

// parseProcStatCPU parses the aggregate "cpu …" line of /proc/stat into busy
// and total ticks; idle and iowait count as not busy, guest time is already
// inside user and nice.
func parseProcStatCPU(line string) (busy, total uint64, err error) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("parse /proc/stat line %q: want \"cpu user nice system idle iowait irq softirq steal …\"", line)
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("parse /proc/stat line %q: %w", line, err)
		}
	}
	for _, x := range v {
		total += x
	}
	return total - v[3] - v[4], total, nil
}

func cgroupUsage(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read cgroup cpu.stat: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "usage_usec "); ok {
			return strconv.ParseUint(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("read cgroup cpu.stat %s: no usage_usec", path)
}

// cpuWindow is the CPU use of one measurement window, in cores (1.0 = one
// CPU fully busy): the whole host, the cluster's cgroup (every process of
// the cluster, including the clients we exec), and the rest (other users of
// this shared machine), which is what makes a window "disturbed".
type cpuWindow struct {
	Seconds      float64
	HostBusyPct  float64 // of all CPUs
	HostCores    float64
	ClusterCores float64
	ForeignCores float64
}

func cpuBetween(a, b cpuSample) cpuWindow {
	secs := b.at.Sub(a.at).Seconds()
	w := cpuWindow{Seconds: secs}
	if secs <= 0 || b.ticks <= a.ticks {
		return w
	}
	w.HostBusyPct = 100 * float64(b.busyTicks-a.busyTicks) / float64(b.ticks-a.ticks)
	w.HostCores = float64(b.busyTicks-a.busyTicks) / userHZ / secs
	w.ClusterCores = float64(b.clusterUsageMicro-a.clusterUsageMicro) / 1e6 / secs
	w.ForeignCores = max(w.HostCores-w.ClusterCores, 0)
	return w
}

func (w cpuWindow) String() string {
	return fmt.Sprintf("host %.0f%% busy (%.2f cores: cluster %.2f, other %.2f) over %.1fs",
		w.HostBusyPct, w.HostCores, w.ClusterCores, w.ForeignCores, w.Seconds)
}

// histogram is a Prometheus histogram read from the text exposition format:
// cumulative bucket counts by upper bound.
type histogram struct {
	bounds []float64 // ascending, +Inf last
	counts []float64 // cumulative
	sum    float64
	count  float64
}

// parseHistogram finds the histogram name in a text exposition. A missing
// histogram is an empty one (no observation yet).
func parseHistogram(text, name string) (histogram, error) {
	var h histogram
	type bucket struct{ le, n float64 }
	var bs []bucket
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		switch {
		case strings.HasPrefix(key, name+"_bucket{"):
			i := strings.Index(key, `le="`)
			if i < 0 {
				continue
			}
			leStr, _, _ := strings.Cut(key[i+4:], `"`)
			le, lerr := strconv.ParseFloat(leStr, 64) // accepts "+Inf"
			if err != nil || lerr != nil {
				return h, fmt.Errorf("parse metric line %q", line)
			}
			bs = append(bs, bucket{le, v})
		case key == name+"_sum" && err == nil:
			h.sum = v
		case key == name+"_count" && err == nil:
			h.count = v
		}
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	for _, b := range bs {
		h.bounds = append(h.bounds, b.le)
		h.counts = append(h.counts, b.n)
	}
	return h, nil
}

// add returns h + sign*o, for histograms with the same buckets (or empty).
func (h histogram) add(o histogram, sign float64) histogram {
	if len(h.bounds) == 0 {
		h.bounds = slices.Clone(o.bounds)
		h.counts = make([]float64, len(o.counts))
	}
	out := histogram{bounds: h.bounds, counts: slices.Clone(h.counts), sum: h.sum + sign*o.sum, count: h.count + sign*o.count}
	for i := range out.counts {
		if i < len(o.counts) {
			out.counts[i] += sign * o.counts[i]
		}
	}
	return out
}

// quantile estimates the q-quantile as Prometheus' histogram_quantile does:
// linear interpolation inside the bucket that holds it.
func (h histogram) quantile(q float64) float64 {
	if len(h.counts) == 0 || h.count <= 0 {
		return math.NaN()
	}
	rank := q * h.counts[len(h.counts)-1]
	lower, below := 0.0, 0.0
	for i, c := range h.counts {
		if c >= rank {
			if math.IsInf(h.bounds[i], 1) {
				return lower // above the last finite bound: report that bound
			}
			if c == below {
				return h.bounds[i]
			}
			return lower + (h.bounds[i]-lower)*(rank-below)/(c-below)
		}
		lower, below = h.bounds[i], c
	}
	return lower
}

func TestParseProcStatCPU(t *testing.T) {
	busy, total, err := parseProcStatCPU("cpu  100 5 50 800 40 3 2 0 0 0")
	if err != nil {
		t.Fatal(err)
	}
	if busy != 160 || total != 1000 {
		t.Errorf("parseProcStatCPU = %d, %d, want 160, 1000", busy, total)
	}
	if _, _, err := parseProcStatCPU("intr 1 2 3"); err == nil {
		t.Error("parseProcStatCPU(intr line) succeeded, want an error")
	}
}

func TestHistogramQuantile(t *testing.T) {
	const text = `# HELP h x
# TYPE h histogram
h_bucket{le="0.001"} 0
h_bucket{le="0.002"} 50
h_bucket{le="0.004"} 100
h_bucket{le="+Inf"} 100
h_sum 0.2
h_count 100
`
	h, err := parseHistogram(text, "h")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		q, want float64
	}{
		{0.5, 0.002},
		{0.25, 0.0015},
		{0.99, 0.00396},
	}
	for _, tt := range tests {
		if got := h.quantile(tt.q); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	d := h.add(h, -1)
	if d.count != 0 || !math.IsNaN(d.quantile(0.5)) {
		t.Errorf("h - h = %+v, want empty", d)
	}
	if empty, _ := parseHistogram("other 1\n", "h"); empty.add(h, 1).count != 100 {
		t.Errorf("empty + h lost observations")
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{
		{50, 100 * time.Millisecond},
		{99, 198 * time.Millisecond},
		{100, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("percentile(1..200ms, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
}
