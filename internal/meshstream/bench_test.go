package meshstream_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	"github.com/weftmesh/weft/internal/meshstream"
)

// BenchmarkSetNodeToAck measures, for 100 nodes whose sets all change by
// one resource at once (a policy change reaching every node), the time from
// a node's SetNode to its client's ACK; it reports the p50 and p99 over
// every node and round. One op is one round. The nodes' sets share their
// resources, as the operator's would.
func BenchmarkSetNodeToAck(b *testing.B) {
	for _, bc := range []struct {
		name    string
		perNode int
		patch   bool
	}{
		{"SetNode/resources=100", 100, false},
		{"SetNode/resources=10000", 10000, false},
		{"PatchNode/resources=10000", 10000, true},
	} {
		b.Run(bc.name, func(b *testing.B) { benchSetNodeToAck(b, 100, bc.perNode, bc.patch) })
	}
}

func benchSetNodeToAck(b *testing.B, nodes, perNode int, patch bool) {
	var (
		mu      sync.Mutex
		want    = make(map[string]string)    // node → system version awaited
		setAt   = make(map[string]time.Time) // node → when SetNode was called
		latency []time.Duration
	)
	acked := make(chan struct{}, nodes)
	srv := startServer(b, "", meshstream.ServerOptions{OnAck: func(node, sys string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if want[node] != sys {
			return
		}
		delete(want, node)
		latency = append(latency, at.Sub(setAt[node]))
		acked <- struct{}{}
	}})
	shared := make([]*meshv1.Resource, perNode)
	for j := range shared {
		shared[j] = workload(fmt.Sprint(j), "0", fmt.Sprintf("10.%d.%d.1", j/250, j%250))
	}
	sets := make([][]*meshv1.Resource, nodes)
	names := make([]string, nodes)
	for i := range nodes {
		names[i] = fmt.Sprintf("node-%03d", i)
		sets[i] = slices.Clone(shared)
		startClient(b, srv, names[i], &recorder{discard: true})
	}
	// round gives every node its set at sys (or, with changed, patches
	// changed in) and waits for every ACK.
	round := func(sys string, changed *meshv1.Resource) {
		for i, node := range names {
			mu.Lock()
			want[node] = node + "/" + sys
			setAt[node] = time.Now()
			mu.Unlock()
			var err error
			if changed != nil {
				err = srv.PatchNode(node, []*meshv1.Resource{changed}, nil, node+"/"+sys)
			} else {
				err = srv.SetNode(node, slices.Clone(sets[i]), node+"/"+sys)
			}
			if err != nil {
				b.Fatalf("set config: %v", err)
			}
		}
		timeout := time.After(120 * time.Second)
		for range nodes {
			select {
			case <-acked:
			case <-timeout:
				b.Fatalf("system version %s: not every node acked within 120s", sys)
			}
		}
	}
	round("initial", nil) // the full sets, not measured
	mu.Lock()
	latency = nil
	mu.Unlock()

	for r := 0; b.Loop(); r++ {
		j := r % perNode
		changed := workload(fmt.Sprint(j), fmt.Sprint(r+1), fmt.Sprintf("10.255.%d.%d", j%250, r%250))
		for i := range names {
			sets[i][j] = changed
		}
		if patch {
			round(fmt.Sprint(r), changed)
		} else {
			round(fmt.Sprint(r), nil)
		}
	}
	slices.Sort(latency)
	pct := func(p float64) float64 {
		return float64(latency[int(p*float64(len(latency)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
}
