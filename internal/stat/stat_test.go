package stat

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// series writes one Istio TCP series set (as ztunnel exposes it) for a
// connection class.
func series(reporter, srcNS, src, dstNS, dst, flags string, opened, closed, recv, sent float64) string {
	l := fmt.Sprintf(`reporter=%q,source_workload=%q,source_workload_namespace=%q,destination_workload=%q,destination_workload_namespace=%q,source_principal="spiffe://cluster.local/ns/%s/sa/x",connection_security_policy="mutual_tls"`,
		reporter, src, srcNS, dst, dstNS, srcNS)
	var b strings.Builder
	if flags == "-" {
		fmt.Fprintf(&b, "istio_tcp_connections_opened_total{%s,response_flags=\"-\"} %g\n", l, opened)
		fmt.Fprintf(&b, "istio_tcp_received_bytes_total{%s,response_flags=\"-\"} %g\n", l, recv)
		fmt.Fprintf(&b, "istio_tcp_sent_bytes_total{%s,response_flags=\"-\"} %g\n", l, sent)
	}
	fmt.Fprintf(&b, "istio_tcp_connections_closed_total{%s,response_flags=%q} %g\n", l, flags, closed)
	return b.String()
}

const header = `# TYPE istio_tcp_connections_opened_total counter
# TYPE istio_tcp_connections_closed_total counter
# TYPE istio_tcp_received_bytes_total counter
# TYPE istio_tcp_sent_bytes_total counter
`

// node1 and node2 are the two scrapes of two nodes: web (node 1) calls
// api (node 2); batch (node 1) is denied by api.
func scrapes() [2][2]string {
	var out [2][2]string
	for i, k := range []float64{0, 1} {
		out[i][0] = header +
			series("source", "shop", "web", "shop", "api", "-", 100+50*k, 90+45*k, 10000+20000*k, 5000+40000*k) +
			series("source", "shop", "web", "shop", "api", "UF", 0, 2+0*k, 0, 0) +
			series("source", "shop", "batch", "shop", "api", "-", 10+10*k, 0, 0, 0) +
			series("source", "shop", "batch", "shop", "api", "DENY", 0, 10+10*k, 0, 0)
		out[i][1] = header +
			series("destination", "shop", "web", "shop", "api", "-", 100+50*k, 88+46*k, 10000+20000*k, 5000+40000*k) +
			series("destination", "shop", "web", "shop", "api", "URX", 0, 2+4*k, 0, 0) +
			series("destination", "shop", "batch", "shop", "api", "-", 10+10*k, 0, 0, 0) +
			series("destination", "shop", "batch", "shop", "api", "DENY", 0, 10+10*k, 0, 0) +
			series("destination", "blog", "x", "blog", "y", "-", 1, 1, 1, 1)
	}
	// A waypoint in front of api on node 2 (HTTP).
	for i, k := range []float64{0, 1} {
		out[i][1] += "# TYPE istio_requests_total counter\n" +
			fmt.Sprintf("istio_requests_total{reporter=\"destination\",destination_workload=\"api\",destination_workload_namespace=\"shop\",source_workload=\"web\",source_workload_namespace=\"shop\",response_code=\"200\"} %g\n", 1000+95*k) +
			fmt.Sprintf("istio_requests_total{reporter=\"destination\",destination_workload=\"api\",destination_workload_namespace=\"shop\",source_workload=\"web\",source_workload_namespace=\"shop\",response_code=\"503\"} %g\n", 10+5*k) +
			"# TYPE istio_request_duration_milliseconds histogram\n"
		l := `reporter="destination",destination_workload="api",destination_workload_namespace="shop",source_workload="web",source_workload_namespace="shop",response_code="200"`
		for _, b := range []struct {
			le string
			n  float64
		}{{"1", 0}, {"5", 10 + 50*k}, {"10", 800 + 90*k}, {"50", 1000 + 99*k}, {"+Inf", 1010 + 100*k}} {
			out[i][1] += fmt.Sprintf("istio_request_duration_milliseconds_bucket{%s,le=%q} %g\n", l, b.le, b.n)
		}
		out[i][1] += fmt.Sprintf("istio_request_duration_milliseconds_sum{%s} 1\nistio_request_duration_milliseconds_count{%s} %g\n", l, l, 1010+100*k)
	}
	return out
}

func snapshots(t *testing.T) (Snapshot, Snapshot) {
	t.Helper()
	s := scrapes()
	before, after := Snapshot{}, Snapshot{}
	for node := range 2 {
		for i, snap := range []Snapshot{before, after} {
			mf, err := Parse(strings.NewReader(s[i][node]))
			if err != nil {
				t.Fatal(err)
			}
			snap.Add(mf)
		}
	}
	return before, after
}

func TestCompute(t *testing.T) {
	before, after := snapshots(t)
	rows := Compute(before, after, 10)
	got := map[Key]Row{}
	for _, r := range rows {
		got[r.Key] = r
	}
	web := got[Key{"shop", "web", Outbound}]
	// 50 opened in 10 s; active = 150 opened - (135 + 2 UF) closed; bytes
	// to api (received, request direction) 20000 / 10 s out of web.
	if web.ConnsPerSec != 5 || web.Active != 13 || web.BytesOutPerSec != 2000 || web.BytesInPerSec != 4000 {
		t.Errorf("web outbound = %+v, want 5 conn/s, 13 active, 2000 B/s out, 4000 B/s in", web)
	}
	if web.FailedShare != 0 { // 45 closed, none with flags
		t.Errorf("web outbound refused/reset share = %v, want 0", web.FailedShare)
	}
	api := got[Key{"shop", "api", Inbound}]
	// Inbound of api: web (50 opened) + batch (10 opened, all denied).
	// Closed in window: 46 ok + 4 URX + 10 DENY = 60, 14 failed.
	if api.ConnsPerSec != 6 || api.BytesInPerSec != 2000 || math.Abs(api.FailedShare-14.0/60) > 1e-9 {
		t.Errorf("api inbound = %+v, want 6 conn/s, 2000 B/s in, 14/60 refused/reset", api)
	}
	h := api.HTTP
	if h == nil || h.RPS != 10 || math.Abs(h.Success-0.95) > 1e-9 {
		t.Fatalf("api inbound HTTP = %+v, want 10 rps at 95%% success", h)
	}
	// Window buckets: le 5: 50, le 10: 90, le 50: 99, +Inf: 100.
	// p50 in (1,5]: 1 + 4*50/50 = 5; p95 in (10,50]: 10 + 40*(95-90)/9; p99 = 50.
	if h.P50 != 5 || math.Abs(h.P95-(10+40*5.0/9)) > 1e-9 || h.P99 != 50 {
		t.Errorf("api latency = p50 %v p95 %v p99 %v, want 5, %v, 50", h.P50, h.P95, h.P99, 10+40*5.0/9)
	}
	if _, ok := got[Key{"shop", "web", Inbound}]; ok {
		t.Errorf("web has an inbound row; nothing called it")
	}
}

func TestComputeCounterReset(t *testing.T) {
	before := Snapshot{{"a", "b", Inbound}: {Opened: 1000, Closed: 990}}
	after := Snapshot{{"a", "b", Inbound}: {Opened: 30, Closed: 20}}
	rows := Compute(before, after, 10)
	if len(rows) != 1 || rows[0].ConnsPerSec != 3 || rows[0].Active != 10 {
		t.Errorf("Compute after a restart = %+v, want 3 conn/s (counted from 0), 10 active", rows)
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64
	}{
		{"empty", 0.5, map[float64]float64{}, math.NaN()},
		{"no observations", 0.5, map[float64]float64{10: 0, inf: 0}, math.NaN()},
		{"first bucket", 0.5, map[float64]float64{10: 10, inf: 10}, 5},
		{"in +Inf", 0.99, map[float64]float64{10: 10, inf: 20}, 10},
		{"interpolated", 0.75, map[float64]float64{10: 50, 20: 100, inf: 100}, 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Quantile(tt.q, tt.buckets)
			if got != tt.want && !(math.IsNaN(got) && math.IsNaN(tt.want)) {
				t.Errorf("Quantile(%v, %v) = %v, want %v", tt.q, tt.buckets, got, tt.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		want    Target
		wantErr bool
	}{
		{in: "deploy/web", want: Target{KindDeployment, "default", "web"}},
		{in: "shop/deployment/web", want: Target{KindDeployment, "shop", "web"}},
		{in: "po/web-1", want: Target{KindPod, "default", "web-1"}},
		{in: "shop/pods/web-1", want: Target{KindPod, "shop", "web-1"}},
		{in: "ns/shop", want: Target{Kind: KindNamespace, Name: "shop"}},
		{in: "namespace/shop", want: Target{Kind: KindNamespace, Name: "shop"}},
		{in: "shop/ns/x", wantErr: true},
		{in: "svc/web", wantErr: true},
		{in: "web", wantErr: true},
		{in: "deploy/", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in, "default")
		if (err != nil) != tt.wantErr || err == nil && got != tt.want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestRun drives Run against two fake nodes on loopback addresses
// (127.0.0.1 and 127.0.0.2, one port), found through a fake API server.
func TestRun(t *testing.T) {
	var round atomic.Int32
	s := scrapes()
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln1.Addr().(*net.TCPAddr).Port
	ln2, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	for node, ln := range []net.Listener{ln1, ln2} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/metrics" {
				http.NotFound(w, r)
				return
			}
			w.Write([]byte(s[round.Load()][node]))
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	kube := fake.NewClientset(
		node("node-1", "127.0.0.1"), node("node-2", "127.0.0.2"), node("node-3", "127.0.0.3"),
		ztunnel("node-1"), ztunnel("node-2"),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "api-5c4b", Namespace: "shop", OwnerReferences: []metav1.OwnerReference{
			{Kind: "Deployment", Name: "api", Controller: ptr.To(true)}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "api-5c4b-xyz", Namespace: "shop", OwnerReferences: []metav1.OwnerReference{
			{Kind: "ReplicaSet", Name: "api-5c4b", Controller: ptr.To(true)}}}},
	)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	opts := Options{
		Kube: kube, MetricsPort: port, Window: 10 * time.Second,
		Now: func() time.Time { return now },
		Sleep: func(_ context.Context, d time.Duration) error {
			now = now.Add(d)
			round.Store(1)
			return nil
		},
	}
	tests := []struct {
		arg  string
		file string
	}{
		{"shop/deploy/api", "deployment"},
		{"shop/po/api-5c4b-xyz", "deployment"}, // a pod shows its workload
		{"ns/shop", "namespace"},
		{"shop/deploy/api", "deployment-json"},
	}
	for _, tt := range tests {
		t.Run(tt.arg+" "+tt.file, func(t *testing.T) {
			round.Store(0)
			target, err := ParseTarget(tt.arg, "default")
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(t.Context(), opts, target)
			if err != nil {
				t.Fatalf("Run(%s): %v", tt.arg, err)
			}
			if res.Nodes != 2 || res.Window != 10*time.Second {
				t.Errorf("Run(%s) scraped %d nodes over %s, want 2 over 10s", tt.arg, res.Nodes, res.Window)
			}
			var out bytes.Buffer
			write := WriteTable
			if strings.HasSuffix(tt.file, "json") {
				write = WriteJSON
			}
			if err := write(&out, res); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", tt.file+".golden"), out.String())
		})
	}

	t.Run("unknown deployment", func(t *testing.T) {
		_, err := Run(t.Context(), opts, Target{KindDeployment, "shop", "nope"})
		if err == nil || err.Error() != "deployment/shop/nope not found" {
			t.Errorf("Run(deployment nope) = %v, want not found", err)
		}
	})
}

func node(name, ip string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
}

func ztunnel(nodeName string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-ztunnel-" + nodeName, Namespace: "weft-system", Labels: map[string]string{"app.kubernetes.io/name": "weft-ztunnel"}},
		Spec:       corev1.PodSpec{NodeName: nodeName},
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	testutil.Golden(t, path, got, *update)
}
