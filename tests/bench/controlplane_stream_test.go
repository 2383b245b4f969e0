//go:build bench

package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
	accessv1alpha3 "github.com/weftmesh/weft/api/smi/access/v1alpha3"
	"github.com/weftmesh/weft/internal/meshstream"
	"github.com/weftmesh/weft/tests/cluster"
)

// bearer is a token sent with every call, as the node proxy sends its
// projected token.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// connect opens one config stream per simulated node, each on its own
// connection with a token bound to that node's node proxy pod (audience
// weft), verifying the operator's serving certificate against the mesh
// root, and waits until every node holds the same set.
func (b *cpBench) connect(ctx context.Context, tb testing.TB, op *operatorProc) {
	tb.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(op.trustPEM) {
		tb.Fatalf("the CA Secret's ca.crt holds no certificate: %q", op.trustPEM)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: cpServerName, MinVersion: tls.VersionTLS13})
	tokens := make([]string, len(b.nodes))
	if err := parallel(ctx, len(b.nodes), func(ctx context.Context, i int) error {
		pods := b.kube.CoreV1().Pods(cluster.WeftNamespace)
		p, err := pods.Get(ctx, "ztunnel-"+b.nodes[i], metav1.GetOptions{})
		if err != nil {
			return err
		}
		tr, err := b.kube.CoreV1().ServiceAccounts(cluster.WeftNamespace).CreateToken(ctx, cpProxySA, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{
				Audiences:         []string{"weft"},
				ExpirationSeconds: ptr.To[int64](3600),
				BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("request a token for pod %s: %w", p.Name, err)
		}
		tokens[i] = tr.Status.Token
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The clients stop before the operator does (Cleanup runs last
	// registered first), so that stopping it breaks no stream.
	clientCtx, stopClients := context.WithCancel(b.bg)
	var clients sync.WaitGroup
	tb.Cleanup(func() {
		stopClients()
		clients.Wait()
	})
	began := time.Now()
	for i, v := range b.views {
		cc, err := grpc.NewClient(op.grpcAddr, grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(bearer(tokens[i])))
		if err != nil {
			tb.Fatal(err)
		}
		cl, err := meshstream.NewClient(cc, v.node, v.apply, meshstream.ClientOptions{}, log)
		if err != nil {
			tb.Fatal(err)
		}
		clients.Go(func() {
			defer cc.Close()
			_ = cl.Run(clientCtx)
		})
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		v, same := b.commonVersion()
		if same && v != "" {
			break
		}
		if time.Now().After(deadline) {
			_, missing := b.synced()
			tb.Fatalf("%d of %d nodes hold no set 3 min after connecting (e.g. %v): see %s", len(missing), len(b.nodes), missing[:min(5, len(missing))], op.logPath)
		}
		select {
		case <-ctx.Done():
			tb.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	tb.Logf("%d nodes connected and synced %d resources each in %v", len(b.nodes), b.heldResources(), time.Since(began).Round(time.Millisecond))
	b.settle(ctx, tb)
}

// synced returns the nodes that hold a set and those that do not.
func (b *cpBench) synced() (have, missing []string) {
	for _, v := range b.views {
		v.mu.Lock()
		if v.version != "" {
			have = append(have, v.node)
		} else {
			missing = append(missing, v.node)
		}
		v.mu.Unlock()
	}
	return have, missing
}

// commonVersion returns the version every node holds; same is false when
// they differ.
func (b *cpBench) commonVersion() (version string, same bool) {
	for i, v := range b.views {
		v.mu.Lock()
		cur := v.version
		v.mu.Unlock()
		if i == 0 {
			version = cur
		} else if cur != version {
			return "", false
		}
	}
	return version, true
}

func (b *cpBench) heldResources() int {
	v := b.views[0]
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.resources)
}

// setProbe makes probe the change every node is timed for.
func (b *cpBench) setProbe(probe func(map[string]*meshv1.Resource) bool) {
	for _, v := range b.views {
		v.mu.Lock()
		v.probe, v.hit = probe, time.Time{}
		if probe(v.resources) {
			v.hit = time.Now()
		}
		v.mu.Unlock()
	}
}

// hits returns when each node applied the probed change, and the nodes that
// have not yet.
func (b *cpBench) hits() (hits []time.Time, missing []string) {
	for _, v := range b.views {
		v.mu.Lock()
		if v.hit.IsZero() {
			missing = append(missing, v.node)
		} else {
			hits = append(hits, v.hit)
		}
		v.mu.Unlock()
	}
	return hits, missing
}

// changeTrafficTarget replaces the sources of one TrafficTarget with a new
// identity and times its arrival at every node.
func (b *cpBench) changeTrafficTarget(ctx context.Context, tb testing.TB, i int) change {
	tb.Helper()
	b.settle(ctx, tb)
	src := fmt.Sprintf("client-%d", i)
	want := cpSourceID(src)
	b.setProbe(func(res map[string]*meshv1.Resource) bool {
		r := res[meshv1.PolicyName(cpTargetNS, cpTarget)]
		return r != nil && slices.Contains(r.GetPolicy().GetSources(), want)
	})
	patch := fmt.Sprintf(`{"spec":{"sources":[{"kind":"ServiceAccount","name":"sa-1"},{"kind":"ServiceAccount","name":%q}]}}`, src)
	t0 := time.Now()
	if _, err := b.dyn.Resource(ttResource).Namespace(cpTargetNS).Patch(ctx, cpTarget, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		tb.Fatalf("update traffictarget %s/%s: %v", cpTargetNS, cpTarget, err)
	}
	return b.waitAll(ctx, tb, "TrafficTarget change "+src, t0)
}

// addPod adds a pod and times, from the status write that gives it its IP
// (when it becomes a workload anyone could reach), its arrival at every
// node.
func (b *cpBench) addPod(ctx context.Context, tb testing.TB, i int) change {
	tb.Helper()
	b.settle(ctx, tb)
	n := i % len(b.nodes)
	idx := b.podsPerNode[n]
	b.podsPerNode[n]++
	ns, k := cpNamespace(i%cpNamespaces), i%cpServicesPerNS
	p, err := b.kube.CoreV1().Pods(ns).Create(ctx, newAppPod(b, ns, fmt.Sprintf("added-%03d", i), k, n), metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create pod: %v", err)
	}
	name := meshv1.WorkloadName(string(p.UID))
	b.setProbe(func(res map[string]*meshv1.Resource) bool {
		r := res[name]
		return r != nil && len(r.GetWorkload().GetIps()) > 0
	})
	t0 := time.Now()
	if err := b.reportPod(ctx, p, cpPodIP(n, idx), n); err != nil {
		tb.Fatal(err)
	}
	return b.waitAll(ctx, tb, "pod add "+p.Name, t0)
}

// checkTrafficTargetStatus checks, on the real API server, the status the
// operator writes: the changed TrafficTarget is Accepted at its current
// generation, with its sources summarised.
func (b *cpBench) checkTrafficTargetStatus(ctx context.Context, tb testing.TB, lastSource string) {
	tb.Helper()
	want := cpTargetNS + "/sa-1," + cpTargetNS + "/" + lastSource
	err := cluster.Poll(ctx, 15*time.Second, 50*time.Millisecond, "TrafficTarget status", func(ctx context.Context) (bool, string, error) {
		u, err := b.dyn.Resource(ttResource).Namespace(cpTargetNS).Get(ctx, cpTarget, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		var tt accessv1alpha3.TrafficTarget
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &tt); err != nil {
			return false, "", err
		}
		for _, c := range tt.Status.Conditions {
			if c.Type == "Accepted" {
				ok := c.Status == metav1.ConditionTrue && c.ObservedGeneration == tt.Generation &&
					tt.Status.ObservedGeneration == tt.Generation && tt.Status.SourcesSummary == want
				return ok, fmt.Sprintf("generation %d, status %+v", tt.Generation, tt.Status), nil
			}
		}
		return false, fmt.Sprintf("generation %d, status %+v", tt.Generation, tt.Status), nil
	})
	if err != nil {
		tb.Errorf("%v (want Accepted=True at the current generation, sourcesSummary %q)", err, want)
	}
}
