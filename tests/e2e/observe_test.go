package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/tests/cluster"
)

// TestObserve: the flows of three meshed pods on two nodes, one connection
// denied by an SMI TrafficTarget, are what `weft observe` prints (pods,
// identities, ports, bytes, verdicts, the policy reason), live with
// --follow; the real hubble CLI reads the same flows from a weft agent; and
// `weft status` reports every node healthy, then the node whose ztunnel was
// stopped.
func TestObserve(t *testing.T) {
	began := time.Now()
	o := setupObserve(t)
	t.Logf("setup (cluster, mesh, pods, policy, traffic) took %v", time.Since(began).Round(time.Millisecond))

	// Every check below reads flows of the two connections the setup made:
	// a's echo stream to the server (allowed) and b's attempt (denied).
	var all []*observerpb.GetFlowsResponse
	t.Run("weft observe --last 50 -o json", func(t *testing.T) {
		all = o.waitFlows(t, func(rs []*observerpb.GetFlowsResponse) string {
			return o.missing(flowsOf(rs))
		}, "--last", "50")
		flows := flowsOf(all)
		o.checkAllowed(t, flows)
		t.Run("client-b denied", func(t *testing.T) { o.checkDenied(t, flows) })
		for _, r := range all {
			if f := r.GetFlow(); f != nil && (r.GetNodeName() == "" || r.GetNodeName() != f.GetNodeName()) {
				t.Errorf("response of node %q holds a flow of node %q: each must name the node that recorded it", r.GetNodeName(), f.GetNodeName())
				break
			}
		}
		// Both nodes' flows, merged by time.
		for i := 1; i < len(flows); i++ {
			if prev, cur := flows[i-1].GetTime().AsTime(), flows[i].GetTime().AsTime(); cur.Before(prev) {
				t.Errorf("flow %d (%s, %v) printed after flow %d (%s, %v): not merged by time", i, flows[i].GetNodeName(), cur, i-1, flows[i-1].GetNodeName(), prev)
				break
			}
		}
	})

	t.Run("weft observe --node node1 --verdict DROPPED", func(t *testing.T) {
		rs := o.weftFlows(t, "--node", "node1", "--verdict", "DROPPED", "--last", "50")
		if len(rs) == 0 {
			t.Fatal("no flows")
		}
		for _, f := range flowsOf(rs) {
			if f.GetNodeName() != "node1" || f.GetVerdict() != flowpb.Verdict_DROPPED {
				t.Errorf("flow of node %s with verdict %s in the DROPPED flows of node1", f.GetNodeName(), f.GetVerdict())
			}
		}
		if o.denyFlow(flowsOf(rs)) == nil {
			t.Errorf("the DROPPED flows of node1 do not include client-b's denied connection")
		}
		// The default (compact) format: both ends and the verdict.
		out, stderr, err := runCLI(testCtx(t), 30*time.Second, o.weft, "observe", "--kubeconfig", o.c.Kubeconfig(), "--token-file", o.tokenFile,
			"--node", "node1", "--verdict", "DROPPED", "--last", "50")
		if err != nil {
			t.Fatalf("weft observe (compact): %v\n%s", err, stderr)
		}
		var line string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, o.ns+"/"+o.clientB.Name) {
				line = l
			}
		}
		if !strings.Contains(line, o.ns+"/"+o.server.Name+":9000") || !strings.Contains(line, "DROPPED") {
			t.Errorf("weft observe (compact) shows no drop of client-b's connection to %s:9000:\n%s", o.server.Name, out)
		}
		t.Logf("compact: %s", line)
	})

	t.Run("weft observe with a token not allowed to read flows", func(t *testing.T) {
		serviceAccount(t, o.c, o.ns, "stranger")
		out, stderr, err := runCLI(testCtx(t), 30*time.Second, o.weft, "observe", "-o", "json", "--kubeconfig", o.c.Kubeconfig(),
			"--token-file", saToken(t, o.c, o.ns, "stranger"), "--node", "node1", "--last", "50")
		if exitCode(err) != 1 || len(out) > 0 || !strings.Contains(strings.ToLower(string(stderr)), "permission") {
			t.Errorf("weft observe as a ServiceAccount without weft-flows-reader: exit %d, %d bytes of flows, stderr %q; want exit 1, no flows, a permission error",
				exitCode(err), len(out), stderr)
		}
	})

	t.Run("weft observe --follow shows a new flow within 10s", func(t *testing.T) {
		o.checkFollow(t)
	})

	t.Run("hubble CLI", func(t *testing.T) {
		o.checkHubble(t, all)
	})

	t.Run("weft status", func(t *testing.T) {
		o.checkStatus(t)
	})
	t.Logf("TestObserve took %v", time.Since(began).Round(time.Millisecond))
}

// observeApp is TestObserve's mesh: server (tcp-echo :9000, ServiceAccount
// server) on node1; client-a (allowed) and client-b (denied by the
// TrafficTarget only-a) on node0.
type observeApp struct {
	*meshApp
	weft      string // the weft CLI
	tokenFile string // a token bound to weft-flows-reader
	server    *corev1.Pod
	clientA   *corev1.Pod
	clientB   *corev1.Pod
	// stream is client-a's echo stream through the mesh, made after the
	// policy applied; policyAt is when the policy was applied.
	stream   streamResult
	streamAt time.Time
	policyAt time.Time
}

func setupObserve(t *testing.T) *observeApp {
	t.Helper()
	c := cluster.StartForTest(t, cluster.Config{Nodes: 2})
	ctx := testCtx(t)
	step := time.Now()
	if _, err := c.InstallMesh(ctx, "operator.enabled=true"); err != nil {
		t.Fatal(err)
	}
	t.Logf("mesh installed in %v", time.Since(step).Round(time.Millisecond))
	o := &observeApp{meshApp: &meshApp{c: c, ns: "observe"}, weft: filepath.Join(c.BinDir(), "weft")}
	createNamespace(t, c, o.ns)
	labelNamespace(t, c, o.ns, `"enabled"`)
	for _, sa := range []string{"a", "b", "server", "flow-reader"} {
		serviceAccount(t, c, o.ns, sa)
	}
	deployment(t, c, o.ns, "server", "server", "node1", tcpEchoContainer())
	deployment(t, c, o.ns, "client-a", "a", "node0", sleepContainer())
	deployment(t, c, o.ns, "client-b", "b", "node0", sleepContainer())
	o.server = podOf(t, c, o.ns, "server")
	o.clientA = podOf(t, c, o.ns, "client-a")
	o.clientB = podOf(t, c, o.ns, "client-b")
	o.tokenFile = flowReaderToken(t, c, o.ns, "flow-reader")
	target := o.serverAddr()
	for _, cl := range []string{"client-a", "client-b"} {
		err := cluster.Poll(ctx, 30*time.Second, 300*time.Millisecond, cl+" meshed", func(ctx context.Context) (bool, string, error) {
			before := o.opened(t, "node1", cl, "server")
			if _, err := o.tcp(t, ctx, cl, target); err != nil {
				return false, err.Error(), nil
			}
			return o.opened(t, "node1", cl, "server") > before, "not counted by the server's ztunnel", nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	o.policyAt = time.Now()
	kubectlApply(t, c, allPortsTarget(o.ns, "only-a", "server", "a"))
	err := cluster.Poll(ctx, 15*time.Second, 200*time.Millisecond, "client-b refused", func(ctx context.Context) (bool, string, error) {
		_, err := o.tcp(t, ctx, "client-b", target)
		return err != nil, "still allowed", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	o.streamAt = time.Now()
	o.stream = o.meshApp.stream(t, "client-a", target, 1, 100_000, "")
	if o.stream.OK != 1 {
		t.Fatalf("client-a's stream under a TrafficTarget that allows it: %+v", o.stream)
	}
	return o
}

func (o *observeApp) serverAddr() string { return o.server.Status.PodIP + ":9000" }

func (o *observeApp) principal(sa string) string {
	return "spiffe://cluster.local/ns/" + o.ns + "/sa/" + sa
}

// weftFlows runs `weft observe -o json` through the API server and the
// nodes' TLS flow API, with extra args, and decodes its output.
func (o *observeApp) weftFlows(t *testing.T, args ...string) []*observerpb.GetFlowsResponse {
	t.Helper()
	out, stderr, err := runCLI(testCtx(t), 30*time.Second, o.weft, o.observeArgs(args...)...)
	if err != nil {
		t.Fatalf("weft observe %v: %v\n%s", args, err, stderr)
	}
	return decodeFlows(t, out)
}

func (o *observeApp) observeArgs(args ...string) []string {
	return append([]string{"observe", "-o", "json", "--kubeconfig", o.c.Kubeconfig(), "--token-file", o.tokenFile}, args...)
}

// waitFlows runs weft observe until missing finds nothing missing in what
// it printed: the records reach the agents asynchronously.
func (o *observeApp) waitFlows(t *testing.T, missing func([]*observerpb.GetFlowsResponse) string, args ...string) []*observerpb.GetFlowsResponse {
	t.Helper()
	var rs []*observerpb.GetFlowsResponse
	start := time.Now()
	err := cluster.Poll(testCtx(t), 15*time.Second, 500*time.Millisecond, "flows of client-a and client-b", func(ctx context.Context) (bool, string, error) {
		out, stderr, err := runCLI(ctx, 15*time.Second, o.weft, o.observeArgs(args...)...)
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, stderr), nil
		}
		rs = decodeFlows(t, out)
		m := missing(rs)
		return m == "", m, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d responses, the expected flows among them %v after the traffic ended", len(rs), time.Since(start).Round(time.Millisecond))
	return rs
}

// missing says which of the expected flows are not in flows ("" when all
// are).
func (o *observeApp) missing(flows []*flowpb.Flow) string {
	var m []string
	for _, want := range []struct {
		node  string
		dir   flowpb.TrafficDirection
		event string
	}{
		{"node0", flowpb.TrafficDirection_EGRESS, "open"},
		{"node0", flowpb.TrafficDirection_EGRESS, "close"},
		{"node1", flowpb.TrafficDirection_INGRESS, "open"},
		{"node1", flowpb.TrafficDirection_INGRESS, "close"},
	} {
		if o.streamFlow(flows, want.node, want.dir, want.event) == nil {
			m = append(m, fmt.Sprintf("client-a's %s %s on %s", want.dir, want.event, want.node))
		}
	}
	if o.denyFlow(flows) == nil {
		m = append(m, "client-b's denied connection on node1")
	}
	return strings.Join(m, ", ")
}

// streamFlow is the record of client-a's stream on node in direction dir
// whose extension event is event: the last one after the stream began.
func (o *observeApp) streamFlow(flows []*flowpb.Flow, node string, dir flowpb.TrafficDirection, event string) *flowpb.Flow {
	var found *flowpb.Flow
	for _, f := range flows {
		if f.GetNodeName() == node && f.GetTrafficDirection() == dir && f.GetSource().GetPodName() == o.clientA.Name &&
			flowExtras(f)["event"] == event && !f.GetTime().AsTime().Before(o.streamAt.Add(-time.Second)) {
			found = f
		}
	}
	return found
}

// denyFlow is node1's record of client-b's refused connection.
func (o *observeApp) denyFlow(flows []*flowpb.Flow) *flowpb.Flow {
	var found *flowpb.Flow
	for _, f := range flows {
		if f.GetNodeName() == "node1" && f.GetSource().GetPodName() == o.clientB.Name && f.GetVerdict() == flowpb.Verdict_DROPPED &&
			!f.GetTime().AsTime().Before(o.policyAt.Add(-time.Second)) {
			found = f
		}
	}
	return found
}

// checkAllowed: client-a's stream has open and close records on both
// nodes, with both pods, identities, ports and the bytes the client
// counted.
func (o *observeApp) checkAllowed(t *testing.T, flows []*flowpb.Flow) {
	for _, side := range []struct {
		node string
		dir  flowpb.TrafficDirection
	}{{"node0", flowpb.TrafficDirection_EGRESS}, {"node1", flowpb.TrafficDirection_INGRESS}} {
		t.Run(fmt.Sprintf("client-a %s on %s", side.dir, side.node), func(t *testing.T) {
			open := o.streamFlow(flows, side.node, side.dir, "open")
			closed := o.streamFlow(flows, side.node, side.dir, "close")
			defer func() {
				if t.Failed() {
					logFlows(t, open, closed)
				}
			}()
			for _, f := range []*flowpb.Flow{open, closed} {
				what := flowExtras(f)["event"] + " record"
				o.checkEndpoints(t, what, f, o.clientA, "a")
				if f.GetVerdict() != flowpb.Verdict_FORWARDED {
					t.Errorf("%s: verdict %s, want FORWARDED", what, f.GetVerdict())
				}
				if f.GetEventType().GetType() != 4 {
					t.Errorf("%s: event type %d, want 4 (Cilium's trace, L4)", what, f.GetEventType().GetType())
				}
				if !f.GetIP().GetEncrypted() {
					t.Errorf("%s: ip.encrypted false for a meshed (mTLS) connection", what)
				}
			}
			if !open.GetL4().GetTCP().GetFlags().GetSYN() {
				t.Errorf("open record: TCP flags %v, want SYN", open.GetL4().GetTCP().GetFlags())
			}
			ext := flowExtras(closed)
			if !closed.GetL4().GetTCP().GetFlags().GetFIN() || ext["reason"] != "" {
				t.Errorf("close record: TCP flags %v, reason %q; want FIN and no reason (the stream ended cleanly)", closed.GetL4().GetTCP().GetFlags(), ext["reason"])
			}
			if open.GetL4().GetTCP().GetSourcePort() != closed.GetL4().GetTCP().GetSourcePort() {
				t.Errorf("open and close records have source ports %d and %d: not one connection",
					open.GetL4().GetTCP().GetSourcePort(), closed.GetL4().GetTCP().GetSourcePort())
			}
			if got, want := ext["bytes_sent"], fmt.Sprint(o.stream.BytesSent); got != want {
				t.Errorf("close record: bytes_sent %s, want %s (what client-a sent)", got, want)
			}
			if got, want := ext["bytes_received"], fmt.Sprint(o.stream.BytesReceived); got != want {
				t.Errorf("close record: bytes_received %s, want %s (what client-a received)", got, want)
			}
			if ext["duration_ns"] == "" || ext["duration_ns"] == "0" {
				t.Errorf("close record: duration_ns %q", ext["duration_ns"])
			}
		})
	}
}

// checkDenied: client-b's connection is DROPPED on node1 for the policy,
// with both identities.
func (o *observeApp) checkDenied(t *testing.T, flows []*flowpb.Flow) {
	f := o.denyFlow(flows)
	defer func() {
		if t.Failed() {
			logFlows(t, f)
		}
	}()
	o.checkEndpoints(t, "deny record", f, o.clientB, "b")
	if f.GetDropReasonDesc() != flowpb.DropReason_POLICY_DENIED {
		t.Errorf("deny record: drop reason %s, want POLICY_DENIED", f.GetDropReasonDesc())
	}
	if f.GetTrafficDirection() != flowpb.TrafficDirection_INGRESS {
		t.Errorf("deny record: direction %s, want INGRESS (the server's node decides)", f.GetTrafficDirection())
	}
	ext := flowExtras(f)
	if ext["event"] != "deny" || !strings.Contains(ext["reason"], o.principal("b")) {
		t.Errorf("deny record: extensions event %q reason %q, want event deny and a reason naming %s", ext["event"], ext["reason"], o.principal("b"))
	}
	// The TrafficTarget that selects the server (and does not allow b).
	by := f.GetIngressDeniedBy()
	if len(by) != 1 || by[0].GetKind() != "TrafficTarget" || by[0].GetNamespace() != o.ns || by[0].GetName() != "only-a" {
		t.Errorf("deny record: ingress_denied_by %v, want TrafficTarget %s/only-a", by, o.ns)
	}
	t.Logf("deny record: reason %q", ext["reason"])
}

// checkEndpoints checks a record's two ends: client (ServiceAccount sa)
// to the server on port 9000.
func (o *observeApp) checkEndpoints(t *testing.T, what string, f *flowpb.Flow, client *corev1.Pod, sa string) {
	t.Helper()
	if f == nil {
		t.Errorf("%s missing", what)
		return
	}
	src, dst := f.GetSource(), f.GetDestination()
	if src.GetNamespace() != o.ns || src.GetPodName() != client.Name || dst.GetNamespace() != o.ns || dst.GetPodName() != o.server.Name {
		t.Errorf("%s: %s/%s -> %s/%s, want %s/%s -> %s/%s", what, src.GetNamespace(), src.GetPodName(), dst.GetNamespace(), dst.GetPodName(),
			o.ns, client.Name, o.ns, o.server.Name)
	}
	if f.GetIP().GetSource() != client.Status.PodIP || f.GetIP().GetDestination() != o.server.Status.PodIP {
		t.Errorf("%s: IPs %s -> %s, want the pod IPs %s -> %s", what, f.GetIP().GetSource(), f.GetIP().GetDestination(), client.Status.PodIP, o.server.Status.PodIP)
	}
	tcp := f.GetL4().GetTCP()
	if tcp.GetDestinationPort() != 9000 || tcp.GetSourcePort() == 0 {
		t.Errorf("%s: TCP ports %d -> %d, want an ephemeral port -> 9000", what, tcp.GetSourcePort(), tcp.GetDestinationPort())
	}
	for _, end := range []struct {
		name, principal string
		ep              *flowpb.Endpoint
		key             string
		labels          []string
	}{
		{"source", o.principal(sa), src, "source_principal", []string{"k8s:app=" + client.Labels["app"], "k8s:io.kubernetes.pod.namespace=" + o.ns}},
		{"destination", o.principal("server"), dst, "destination_principal", []string{"k8s:app=server", "k8s:io.kubernetes.pod.namespace=" + o.ns}},
	} {
		if got, want := end.ep.GetIdentity(), weftIdentity(end.principal); got != want {
			t.Errorf("%s: %s identity %d, want %d (of %s)", what, end.name, got, want, end.principal)
		}
		for _, l := range append(end.labels, "weft:principal="+end.principal) {
			if !slices.Contains(end.ep.GetLabels(), l) {
				t.Errorf("%s: %s labels %v lack %q", what, end.name, end.ep.GetLabels(), l)
			}
		}
		if got := flowExtras(f)[end.key]; got != end.principal {
			t.Errorf("%s: extensions %s %q, want %q", what, end.key, got, end.principal)
		}
	}
	if f.GetEmitter().GetName() != "weft-ztunnel" {
		t.Errorf("%s: emitter %q, want weft-ztunnel", what, f.GetEmitter().GetName())
	}
}

// checkFollow: `weft observe --follow` prints client-a's new connection
// within 10 s of it.
func (o *observeApp) checkFollow(t *testing.T) {
	ctx, cancel := context.WithTimeout(testCtx(t), 30*time.Second)
	defer cancel()
	// --last 1: the first line proves the stream is open, so the new
	// connection below cannot come before it.
	cmd := exec.CommandContext(ctx, o.weft, o.observeArgs("--node", "node0", "--follow", "--last", "1")...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	select {
	case _, ok := <-lines:
		if !ok {
			t.Fatalf("weft observe --follow ended before printing anything: %s", stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("weft observe --follow --last 1 printed nothing in 15s: %s", stderr.String())
	}
	made := time.Now()
	if _, err := o.tcp(t, ctx, "client-a", o.serverAddr()); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10*time.Second - time.Since(made))
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("weft observe --follow ended: %s", stderr.String())
			}
			var r observerpb.GetFlowsResponse
			if err := protojson.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("decode %q: %v", line, err)
			}
			f := r.GetFlow()
			if f.GetSource().GetPodName() == o.clientA.Name && !f.GetTime().AsTime().Before(made.Add(-time.Second)) {
				t.Logf("--follow printed client-a's new connection (%s) %v after it was made",
					flowExtras(f)["event"], time.Since(made).Round(time.Millisecond))
				return
			}
		case <-deadline:
			t.Fatalf("weft observe --follow printed no flow of client-a's new connection within 10s: %s", stderr.String())
		}
	}
}

// checkHubble: the real hubble CLI, on a node's unix socket, prints the
// flows weft observe printed, filters DROPPED ones on the server, and
// reports the server healthy.
func (o *observeApp) checkHubble(t *testing.T, weftAll []*observerpb.GetFlowsResponse) {
	hubble := hubbleCLI(t)
	server := "unix://" + filepath.Join(o.c.NodeRoot("node1"), "var", "run", "weft", "hubble.sock")
	ctx := testCtx(t)
	hubbleRun := func(t *testing.T, args ...string) string {
		t.Helper()
		out, stderr, err := runCLI(ctx, 30*time.Second, hubble, append(args, "--server", server)...)
		if err != nil {
			t.Fatalf("hubble %v: %v\n%s%s", args, err, out, stderr)
		}
		return string(out)
	}
	var weftNode1 []*flowpb.Flow
	for _, f := range flowsOf(weftAll) {
		if f.GetNodeName() == "node1" {
			weftNode1 = append(weftNode1, f)
		}
	}

	t.Run("observe -o json --last 50", func(t *testing.T) {
		out := hubbleRun(t, "observe", "-o", "json", "--last", "50")
		flows := flowsOf(decodeFlows(t, []byte(out)))
		for _, want := range []struct {
			what string
			f    *flowpb.Flow
		}{
			{"client-a's INGRESS close", o.streamFlow(weftNode1, "node1", flowpb.TrafficDirection_INGRESS, "close")},
			{"client-a's INGRESS open", o.streamFlow(weftNode1, "node1", flowpb.TrafficDirection_INGRESS, "open")},
			{"client-b's deny", o.denyFlow(weftNode1)},
		} {
			if want.f == nil {
				t.Errorf("weft observe did not print %s: nothing to compare", want.what)
				continue
			}
			if !containsFlow(flows, want.f) {
				t.Errorf("hubble observe does not print %s as weft observe does:\n%v", want.what, protojson.Format(want.f))
			}
		}
		// Hubble renders weft's extras (a google.protobuf.Struct).
		if !strings.Contains(out, `"@type":"type.googleapis.com/google.protobuf.Struct"`) || !strings.Contains(out, `"source_principal":"`+o.principal("a")+`"`) {
			t.Errorf("hubble -o json does not render the extensions Struct with source_principal")
		}
		if n := len(flows); n > 50 || n == 0 {
			t.Errorf("hubble observe --last 50 printed %d flows", n)
		}
	})

	t.Run("observe --verdict DROPPED", func(t *testing.T) {
		flows := flowsOf(decodeFlows(t, []byte(hubbleRun(t, "observe", "-o", "json", "--last", "50", "--verdict", "DROPPED"))))
		for _, f := range flows {
			if f.GetVerdict() != flowpb.Verdict_DROPPED {
				t.Errorf("hubble observe --verdict DROPPED printed a %s flow of %s", f.GetVerdict(), f.GetSource().GetPodName())
			}
		}
		if deny := o.denyFlow(weftNode1); deny == nil || !containsFlow(flows, deny) {
			t.Errorf("hubble observe --verdict DROPPED does not print client-b's denied connection (%d flows)", len(flows))
		}
		// The compact format names both pods and the verdict.
		out := hubbleRun(t, "observe", "--last", "50", "--verdict", "DROPPED")
		if !strings.Contains(out, o.ns+"/"+o.clientB.Name) || !strings.Contains(out, o.ns+"/"+o.server.Name) || !strings.Contains(out, "DROPPED") {
			t.Errorf("hubble observe (compact) does not show client-b's drop:\n%s", out)
		}
	})

	t.Run("status", func(t *testing.T) {
		out := hubbleRun(t, "status")
		if !strings.Contains(out, "Healthcheck (via "+server+"): Ok") || !strings.Contains(out, "Current/Max Flows: ") {
			t.Errorf("hubble status:\n%s", out)
		}
		t.Logf("hubble status:\n%s", out)
	})
}

// checkStatus: weft status exits 0 with every node healthy, then 1 naming
// the node whose ztunnel is stopped (SIGSTOP: the process is there but
// answers nothing, so its pod turns unready), and 0 again once it resumes.
func (o *observeApp) checkStatus(t *testing.T) {
	ctx := testCtx(t)
	// From node0, as from any machine in the cluster: weft status probes
	// pod IPs, which only the nodes route (the host would send them to its
	// default gateway).
	status := func(ctx context.Context) (string, int) {
		out, stderr, err := runCLI(ctx, 30*time.Second, "nsenter", "--net=/run/netns/"+o.c.NodeNetns("node0"), "--",
			o.weft, "status", "--kubeconfig", o.c.Kubeconfig())
		return string(out) + string(stderr), exitCode(err)
	}
	out, code := status(ctx)
	if code != 0 {
		t.Fatalf("weft status on a healthy cluster: exit %d\n%s", code, out)
	}
	for _, n := range o.c.Nodes() {
		if !strings.Contains(out, n) {
			t.Errorf("weft status does not name %s:\n%s", n, out)
		}
	}
	t.Logf("weft status (healthy):\n%s", out)

	pods, err := o.c.Client.CoreV1().Pods(installNS).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=weft-ztunnel", FieldSelector: "spec.nodeName=node1",
	})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("ztunnel pod of node1: %v %v", pods, err)
	}
	pid, err := o.c.ContainerPID(ctx, installNS, pods.Items[0].Name, "ztunnel")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer resume()
	stopped := time.Now()
	err = cluster.Poll(ctx, 30*time.Second, time.Second, "weft status reports node1 unhealthy", func(ctx context.Context) (bool, string, error) {
		out, code = status(ctx)
		return code == 1, fmt.Sprintf("exit %d", code), nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("weft status (node1's ztunnel stopped), %v after SIGSTOP:\n%s", time.Since(stopped).Round(time.Millisecond), out)
	// The problems it lists ("  - ..." lines) name node1, never node0.
	var node1 bool
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "  - ") {
			continue
		}
		node1 = node1 || strings.Contains(line, "node1")
		if strings.Contains(line, "node0") {
			t.Errorf("weft status reports a problem on node0, which is healthy: %s", line)
		}
	}
	if !node1 {
		t.Errorf("weft status exits 1 without a problem naming node1, whose ztunnel is stopped:\n%s", out)
	}
	resume()
	err = cluster.Poll(ctx, 30*time.Second, time.Second, "weft status healthy again", func(ctx context.Context) (bool, string, error) {
		out, code = status(ctx)
		return code == 0, fmt.Sprintf("exit %d", code), nil
	})
	if err != nil {
		t.Errorf("%v\n%s", err, out)
	}
}
