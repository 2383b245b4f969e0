package flows

import (
	"bufio"
	"context"
	"encoding/json"
	"github.com/weftmesh/weft/daemon/flows/internal/flowtest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// hubbleCLI is the real hubble CLI that hack/hubble.sh builds from the
// cilium module (make tools), or the test is skipped saying so.
func hubbleCLI(t *testing.T) string {
	t.Helper()
	env, err := os.ReadFile("../../hack/versions.env")
	if err != nil {
		t.Fatal(err)
	}
	var version string
	for line := range strings.Lines(string(env)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "CILIUM_VERSION="); ok {
			version = v
		}
	}
	bin, err := filepath.Abs(filepath.Join("../../.cache/bin", "hubble-"+version, "hubble"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no hubble CLI at %s (build it with hack/hubble.sh): %v", bin, err)
	}
	return bin
}

// TestHubbleCLI: the real hubble CLI reads this server over its unix
// socket: status, observe -o json --last, observe --verdict DROPPED (the
// server applies the filter and the CLI's default field mask).
func TestHubbleCLI(t *testing.T) {
	bin := hubbleCLI(t)
	s := newTestServer(t, 64)
	_, sock := serveUnix(t, s)
	s.Add(flowtest.L4Flow())
	s.Add(flowtest.HTTPFlow())
	s.Add(flowtest.DroppedFlow())
	s.AddLost(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, 2)

	hubble := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append(args, "--server", "unix://"+sock)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "HUBBLE_CONFIG=/nonexistent")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("hubble %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	status := hubble("status")
	for _, want := range []string{"Healthcheck (via unix://" + sock + "): Ok", "Current/Max Flows: 3/64", "Connected Nodes: 1/1"} {
		if !strings.Contains(status, want) {
			t.Errorf("hubble status output lacks %q:\n%s", want, status)
		}
	}

	// -o json: one JSON object per line, flows and the loss.
	var pods, lost []string
	sc := bufio.NewScanner(strings.NewReader(hubble("observe", "-o", "json", "--last", "50")))
	for sc.Scan() {
		var line struct {
			Flow *struct {
				Source struct {
					PodName string `json:"pod_name"`
				} `json:"source"`
				NodeName string `json:"node_name"`
			} `json:"flow"`
			LostEvents *struct {
				NumEventsLost string `json:"num_events_lost"`
			} `json:"lost_events"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("hubble observe -o json line %q: %v", sc.Text(), err)
		}
		switch {
		case line.Flow != nil:
			pods = append(pods, line.Flow.Source.PodName+"@"+line.Flow.NodeName)
		case line.LostEvents != nil:
			lost = append(lost, line.LostEvents.NumEventsLost)
		}
	}
	if got, want := strings.Join(pods, " "), "web-7d9@node-a a@node-a web-7d9@node-a"; got != want {
		t.Errorf("hubble observe -o json flows = %s, want %s", got, want)
	}
	if len(lost) != 1 || lost[0] != "2" {
		t.Errorf("hubble observe -o json lost events = %v, want one of 2", lost)
	}

	// Compact output with --verdict DROPPED: only the dropped flow.
	compact := hubble("observe", "--verdict", "DROPPED", "--last", "50")
	t.Logf("hubble status:\n%s\nhubble observe --verdict DROPPED:\n%s", status, compact)
	var flowLines []string
	for line := range strings.Lines(compact) {
		if strings.Contains(line, "->") || strings.Contains(line, "<>") {
			flowLines = append(flowLines, line)
		}
	}
	if len(flowLines) != 1 || !strings.Contains(flowLines[0], "shop/web-7d9:40000") ||
		!strings.Contains(flowLines[0], "shop/db-0:5432") || !strings.Contains(flowLines[0], "DROPPED") {
		t.Errorf("hubble observe --verdict DROPPED =\n%s\nwant the one dropped flow shop/web-7d9 -> shop/db-0:5432", compact)
	}
}
