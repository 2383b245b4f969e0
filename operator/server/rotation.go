package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"time"
)

// rotationCheckEvery is how often pending roots are checked besides on
// every ACK and CA change, so that a node that disconnects (and so no
// longer counts) cannot stall a rotation until the next ACK.
const rotationCheckEvery = 5 * time.Second

// rotationAuthority is what rotation needs of the CA; *ca.Authority
// implements it.
type rotationAuthority interface {
	PendingRoots() []*x509.Certificate
	Activate(roots ...*x509.Certificate) bool
	Changed() <-chan struct{}
}

// rotationStream is what rotation needs of the config stream;
// *meshstream.Server implements it.
type rotationStream interface {
	ConnectedNodes() []string
	Acked(node string) (systemVersion string, ok bool)
}

// rotationSets is what rotation needs of the controller;
// *controller.Controller implements it.
type rotationSets interface {
	SystemVersion() (string, bool)
	TrustBundleAt(systemVersion string) ([]byte, bool)
}

// rotation tells the CA which pending roots every connected node trusts
// (ARCHITECTURE.md §4: a new root is in every node's trust bundle, and
// acknowledged, before anything is signed with it). A node trusts a root
// once every stream of it has ACKed a set whose trust bundle holds it.
// Nodes count only once they had time to reconnect after the operator
// started (grace): until then the operator cannot know who is out there.
// It is safe for concurrent use.
type rotation struct {
	authority rotationAuthority
	stream    rotationStream
	sets      rotationSets
	grace     time.Duration
	log       *slog.Logger
	// acks is signalled (without blocking) on every ACK.
	acks chan struct{}
}

func newRotation(a rotationAuthority, st rotationStream, sets rotationSets, grace time.Duration, log *slog.Logger) *rotation {
	return &rotation{authority: a, stream: st, sets: sets, grace: grace, log: log, acks: make(chan struct{}, 1)}
}

// acked is the meshstream OnAck hook: it only wakes run.
func (r *rotation) acked() {
	select {
	case r.acks <- struct{}{}:
	default:
	}
}

// run checks the pending roots on every ACK, CA change and tick until ctx
// ends.
func (r *rotation) run(ctx context.Context) error {
	start := time.NewTimer(r.grace)
	defer start.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-start.C:
	}
	tick := time.NewTicker(rotationCheckEvery)
	defer tick.Stop()
	for {
		changed := r.authority.Changed()
		r.check()
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-r.acks:
		case <-tick.C:
		}
	}
}

// check activates the pending roots if every connected node trusts them.
func (r *rotation) check() {
	pending := r.authority.PendingRoots()
	if len(pending) == 0 {
		return
	}
	if _, ok := r.sets.SystemVersion(); !ok {
		return
	}
	nodes := r.stream.ConnectedNodes()
	for _, node := range nodes {
		sv, ok := r.stream.Acked(node)
		if !ok {
			return
		}
		bundle, ok := r.sets.TrustBundleAt(sv)
		if !ok || !bundleHoldsAll(bundle, pending) {
			return
		}
	}
	if r.authority.Activate(pending...) {
		r.log.Info("every connected node trusts the new roots: the CA now signs with the new CA", "nodes", len(nodes), "roots", len(pending))
	} else {
		r.log.Info("every connected node trusts the pending roots", "nodes", len(nodes), "roots", len(pending))
	}
}

// bundleHoldsAll reports whether the PEM bundle holds every root.
func bundleHoldsAll(bundle []byte, roots []*x509.Certificate) bool {
	var held [][]byte
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			held = append(held, b.Bytes)
		}
	}
	for _, root := range roots {
		found := false
		for _, der := range held {
			if bytes.Equal(der, root.Raw) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
