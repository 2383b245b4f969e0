package observe

import (
	"container/heap"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Target is one node's flow API.
type Target struct {
	// Node is the node's name (for messages; with TLS, also the server name
	// unless ServerName is set).
	Node string
	// Address is "unix:///path/hubble.sock" or "host:port" (TLS).
	Address string
	// CertPEM pins the server's certificate (TLS only): the agent's
	// self-signed certificate from its pod's weft.io/flows-cert annotation.
	CertPEM []byte
	// ServerName is the name the certificate must carry; default Node.
	ServerName string
	// Token is sent as "authorization: Bearer <token>" (TLS only).
	Token string
}

// IsUnix reports whether t is a unix socket.
func (t Target) IsUnix() bool { return strings.HasPrefix(t.Address, "unix://") }

// Dial connects to t (lazily, as grpc.NewClient does).
func Dial(t Target) (*grpc.ClientConn, error) {
	if t.IsUnix() {
		conn, err := grpc.NewClient(t.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("dial flow API %s: %w", t.Address, err)
		}
		return conn, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(t.CertPEM) {
		return nil, fmt.Errorf("dial flow API of node %s at %s: no PEM certificate to pin", t.Node, t.Address)
	}
	name := t.ServerName
	if name == "" {
		name = t.Node
	}
	if t.Token == "" {
		return nil, fmt.Errorf("dial flow API of node %s at %s: %w", t.Node, t.Address, ErrNoToken)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(t.Address, grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(bearer(t.Token)))
	if err != nil {
		return nil, fmt.Errorf("dial flow API of node %s at %s: %w", t.Node, t.Address, err)
	}
	return conn, nil
}

// ErrNoToken: a TLS flow API needs a bearer token and there is none.
var ErrNoToken = errors.New("the node's flow API needs a bearer token, and the kubeconfig has none " +
	"(it authenticates with a client certificate?): pass --token or --token-file " +
	"(a token allowed to get nodes/flows, e.g. from `kubectl create token <serviceaccount>`), " +
	"or use a kubeconfig with a token")

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// NodeError is the failure of one node's stream.
type NodeError struct {
	Node string
	Err  error
}

func (e *NodeError) Error() string { return "node " + e.Node + ": " + e.Err.Error() }
func (e *NodeError) Unwrap() error { return e.Err }

// Observe asks every target for req and hands the responses to emit, one
// at a time, merged by time across targets (like Hubble Relay). Without
// follow it returns once every stream ended; with Last set and several
// targets, it keeps the Last most recent flows of all of them (lost
// events and node messages are always kept). With follow it runs until ctx
// ends, holding each response for reorder (a short delay) so that nodes'
// streams interleave in time order.
//
// A node that fails does not stop the others: its error is reported to
// onErr as it happens (may be nil), and Observe returns all the node
// errors joined after the other streams ended.
func Observe(ctx context.Context, targets []Target, req *observerpb.GetFlowsRequest, reorder time.Duration, emit func(*observerpb.GetFlowsResponse) error, onErr func(error)) error {
	if len(targets) == 0 {
		return errors.New("no node to observe")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if onErr == nil {
		onErr = func(error) {}
	}

	type item struct {
		res  *observerpb.GetFlowsResponse
		node int
	}
	ch := make(chan item)
	var (
		wg      sync.WaitGroup
		errMu   sync.Mutex
		nodeErr []error
	)
	for i, t := range targets {
		wg.Go(func() {
			err := stream(ctx, t, req, func(res *observerpb.GetFlowsResponse) error {
				select {
				case ch <- item{res, i}:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil && ctx.Err() == nil {
				ne := &NodeError{Node: t.Node, Err: err}
				onErr(ne)
				errMu.Lock()
				nodeErr = append(nodeErr, ne)
				errMu.Unlock()
			}
		})
	}
	go func() { wg.Wait(); close(ch) }()
	// Once we return early (an emit error), the streams stop and the
	// closer above finishes; drain so no sender blocks.
	defer func() {
		cancel()
		for range ch {
		}
	}()

	joined := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		slices.SortFunc(nodeErr, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return errors.Join(nodeErr...)
	}

	if !req.GetFollow() {
		var all []item
		for it := range ch {
			all = append(all, it)
		}
		// Stable: one node's own order is kept among equal times.
		slices.SortStableFunc(all, func(a, b item) int {
			return responseTime(a.res).Compare(responseTime(b.res))
		})
		if n := req.GetNumber(); n > 0 && len(targets) > 1 {
			all = keepLast(all, n, func(it item) bool { return it.res.GetFlow() != nil })
		}
		for _, it := range all {
			if err := emit(it.res); err != nil {
				return err
			}
		}
		return joined()
	}

	if len(targets) == 1 {
		for it := range ch {
			if err := emit(it.res); err != nil {
				return err
			}
		}
		return joined()
	}
	// Follow across nodes: a heap by time, each response released once it
	// has waited reorder.
	h := &respHeap{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	seq := 0
	release := func(all bool) error {
		now := time.Now()
		for h.Len() > 0 && (all || now.Sub((*h)[0].arrived) >= reorder) {
			e := heap.Pop(h).(heldResp)
			if err := emit(e.res); err != nil {
				return err
			}
		}
		if h.Len() > 0 {
			timer.Reset(reorder - now.Sub((*h)[0].arrived))
		}
		return nil
	}
	for {
		select {
		case it, ok := <-ch:
			if !ok {
				if err := release(true); err != nil {
					return err
				}
				return joined()
			}
			seq++
			heap.Push(h, heldResp{res: it.res, arrived: time.Now(), seq: seq})
			if h.Len() == 1 {
				timer.Reset(reorder)
			}
		case <-timer.C:
			if err := release(false); err != nil {
				return err
			}
		}
	}
}

// keepLast drops all but the last n items that count, keeping every item
// that does not count.
func keepLast[T any](items []T, n uint64, counts func(T) bool) []T {
	var total uint64
	for _, it := range items {
		if counts(it) {
			total++
		}
	}
	if total <= n {
		return items
	}
	skip := total - n
	out := items[:0:0]
	for _, it := range items {
		if counts(it) && skip > 0 {
			skip--
			continue
		}
		out = append(out, it)
	}
	return out
}

func responseTime(res *observerpb.GetFlowsResponse) time.Time {
	if t := res.GetTime(); t != nil {
		return t.AsTime()
	}
	return res.GetFlow().GetTime().AsTime()
}

type heldResp struct {
	res     *observerpb.GetFlowsResponse
	arrived time.Time
	seq     int
}

type respHeap []heldResp

func (h respHeap) Len() int { return len(h) }
func (h respHeap) Less(i, j int) bool {
	if c := responseTime(h[i].res).Compare(responseTime(h[j].res)); c != 0 {
		return c < 0
	}
	return h[i].seq < h[j].seq
}
func (h respHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *respHeap) Push(x any)   { *h = append(*h, x.(heldResp)) }
func (h *respHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// stream runs one GetFlows call to t.
func stream(ctx context.Context, t Target, req *observerpb.GetFlowsRequest, each func(*observerpb.GetFlowsResponse) error) error {
	conn, err := Dial(t)
	if err != nil {
		return err
	}
	defer conn.Close()
	s, err := observerpb.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		return fmt.Errorf("get flows from %s: %w", t.Address, err)
	}
	for {
		res, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("get flows from %s: %w", t.Address, err)
		}
		if res.GetNodeName() == "" {
			res.NodeName = t.Node
		}
		if err := each(res); err != nil {
			return err
		}
	}
}
