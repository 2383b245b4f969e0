package meshstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

// ClientOptions configure a Client.
type ClientOptions struct {
	// MinBackoff and MaxBackoff bound the wait before reconnecting after the
	// stream broke; the wait doubles on each failure that brought no
	// response, is jittered down to half, and resets once a response
	// arrives. Defaults: 100 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// CallOptions are passed to every DeltaStream call, e.g. per-RPC
	// credentials. They come after the client's default of a 64 MiB
	// receive limit (a full resync carries the node's whole set in one
	// response), so they may override it.
	CallOptions []grpc.CallOption
}

// defaultMaxRecvMsgSize is the client's default receive limit.
const defaultMaxRecvMsgSize = 64 << 20

// State is the set of resources a client holds. Its map is never modified
// once published: share it, do not modify it.
type State struct {
	// SystemVersion is the version of the last applied response; "" before
	// the first.
	SystemVersion string
	// ServerInstance is the server instance the last applied response came
	// from.
	ServerInstance string
	// Resources maps each held resource's name to it; nil before the first
	// applied response.
	Resources map[string]*meshv1.Resource
}

// Update is one response as the client's apply function sees it. Its maps
// and slices are shared: do not modify them.
type Update struct {
	// SystemVersion is the version of the whole set after the update.
	SystemVersion string
	// Resources is the whole set after the update, by name.
	Resources map[string]*meshv1.Resource
	// Changed are the added and changed resources.
	Changed []*meshv1.Resource
	// Removed are the names of held resources the update removes.
	Removed []string
	// Resync is true when the update comes from another server instance
	// than the held set did (a fresh client, or the operator restarted):
	// the server sent its whole set and Resources is exactly that set.
	Resync bool
}

// Client is a node's end of the config stream (agent or ztunnel). Run keeps
// a stream open, applies each response through the apply function and
// acknowledges it; between streams the client keeps its last applied set.
// It is safe for concurrent use.
type Client struct {
	cc    grpc.ClientConnInterface
	node  string
	apply func(context.Context, Update) error
	opts  ClientOptions
	log   *slog.Logger

	running atomic.Bool

	// mu guards the field below.
	mu    sync.Mutex
	state State
}

// NewClient returns a Client for node over cc, holding nothing. apply is
// called from Run's goroutine, one response at a time, and must apply the
// update entirely or not at all: an error NACKs the response with the
// error's text, and the client keeps the set it held before.
func NewClient(cc grpc.ClientConnInterface, node string, apply func(context.Context, Update) error, opts ClientOptions, log *slog.Logger) (*Client, error) {
	switch {
	case cc == nil:
		return nil, errors.New("create config stream client: no connection")
	case node == "":
		return nil, errors.New("create config stream client: empty node name")
	case apply == nil:
		return nil, errors.New("create config stream client: no apply function")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	opts.CallOptions = append([]grpc.CallOption{grpc.MaxCallRecvMsgSize(defaultMaxRecvMsgSize)}, opts.CallOptions...)
	return &Client{
		cc:    cc,
		node:  node,
		apply: apply,
		opts:  opts,
		log:   log.With("component", "meshstream-client", "node", node),
	}, nil
}

// Current returns the set the client holds.
func (c *Client) Current() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Run streams the node's config until ctx ends, reconnecting with capped
// backoff; each new stream resumes by stating the held versions. It returns
// nil once ctx ends, and an error at once if another Run of c is running.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("run config stream client: already running")
	}
	defer c.running.Store(false)
	backoff := c.opts.MinBackoff
	for {
		progressed, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			backoff = c.opts.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		held := c.Current()
		c.log.Warn("config stream broken, keeping the held config", "err", err, "retry_in", wait,
			"system_version", held.SystemVersion, "resources", len(held.Resources))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// session runs one stream until it breaks; progressed reports whether a
// response arrived on it.
func (c *Client) session(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := meshv1.NewMeshConfigClient(c.cc).DeltaStream(ctx, c.opts.CallOptions...)
	if err != nil {
		return false, fmt.Errorf("open config stream: %w", err)
	}
	held := c.Current()
	versions := make(map[string]string, len(held.Resources))
	for name, r := range held.Resources {
		versions[name] = r.GetVersion()
	}
	hello := &meshv1.DeltaRequest{Node: c.node, InitialResourceVersions: versions, ServerInstance: held.ServerInstance}
	if err := send(stream, hello); err != nil {
		return false, fmt.Errorf("send config stream hello: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return progressed, fmt.Errorf("receive config: %w", err)
		}
		progressed = true
		if resp.GetNonce() == "" {
			return progressed, errors.New("receive config: response without a nonce")
		}
		if err := send(stream, c.handle(ctx, resp)); err != nil {
			return progressed, fmt.Errorf("answer config %s: %w", resp.GetSystemVersionInfo(), err)
		}
	}
}

// send sends req, and when the stream has already ended, returns its
// status instead of gRPC's bare io.EOF.
func send(stream grpc.BidiStreamingClient[meshv1.DeltaRequest, meshv1.DeltaResponse], req *meshv1.DeltaRequest) error {
	err := stream.Send(req)
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// handle applies resp and returns its ACK, or its NACK if resp is malformed
// or apply refused it.
func (c *Client) handle(ctx context.Context, resp *meshv1.DeltaResponse) *meshv1.DeltaRequest {
	answer := &meshv1.DeltaRequest{ResponseNonce: resp.GetNonce()}
	held := c.Current()
	u, err := buildUpdate(held, resp)
	if err == nil {
		if err = c.apply(ctx, u); err != nil {
			err = fmt.Errorf("apply config %s: %w", resp.GetSystemVersionInfo(), err)
		}
	}
	if err != nil {
		c.log.Warn("refuse config", "system_version", resp.GetSystemVersionInfo(), "err", err)
		answer.ErrorDetail = err.Error()
		return answer
	}
	c.mu.Lock()
	c.state = State{SystemVersion: u.SystemVersion, ServerInstance: resp.GetServerInstance(), Resources: u.Resources}
	c.mu.Unlock()
	c.log.Debug("applied config", "system_version", u.SystemVersion, "changed", len(u.Changed), "removed", len(u.Removed), "resync", u.Resync)
	return answer
}

// buildUpdate returns held with resp applied, or why resp is malformed.
func buildUpdate(held State, resp *meshv1.DeltaResponse) (Update, error) {
	u := Update{
		SystemVersion: resp.GetSystemVersionInfo(),
		Resources:     maps.Clone(held.Resources),
		Changed:       resp.GetResources(),
		Resync:        resp.GetServerInstance() != held.ServerInstance,
	}
	if u.Resources == nil {
		u.Resources = make(map[string]*meshv1.Resource, len(u.Changed))
	}
	seen := make(map[string]bool, len(u.Changed))
	for _, r := range u.Changed {
		if err := checkResource(r); err != nil {
			return Update{}, fmt.Errorf("check config %s: %w", u.SystemVersion, err)
		}
		if seen[r.GetName()] {
			return Update{}, fmt.Errorf("check config %s: resource %q sent twice", u.SystemVersion, r.GetName())
		}
		seen[r.GetName()] = true
		u.Resources[r.GetName()] = r
	}
	for _, name := range resp.GetRemovedResources() {
		if seen[name] {
			return Update{}, fmt.Errorf("check config %s: resource %q both changed and removed", u.SystemVersion, name)
		}
		if _, ok := u.Resources[name]; ok {
			delete(u.Resources, name)
			u.Removed = append(u.Removed, name)
		}
	}
	return u, nil
}
