package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

// fakeStream is a ServerStream whose RecvMsg returns when answer is
// signalled.
type fakeServerStream struct {
	grpc.ServerStream
	ctx    context.Context
	answer chan error
	sent   chan struct{}
}

func newFakeServerStream(ctx context.Context) *fakeServerStream {
	return &fakeServerStream{ctx: ctx, answer: make(chan error), sent: make(chan struct{}, 10)}
}

func (f *fakeServerStream) Context() context.Context { return f.ctx }
func (f *fakeServerStream) SendMsg(any) error {
	f.sent <- struct{}{}
	return nil
}
func (f *fakeServerStream) RecvMsg(any) error { return <-f.answer }

func response(n int) *meshv1.DeltaResponse {
	r := &meshv1.DeltaResponse{}
	for range n {
		r.Resources = append(r.Resources, &meshv1.Resource{})
	}
	return r
}

func TestResyncBudget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newResyncBudget(1000)
	a := &budgetedStream{ServerStream: newFakeServerStream(ctx), budget: b}
	c := &budgetedStream{ServerStream: newFakeServerStream(ctx), budget: b}

	// a's resync takes the whole budget.
	if err := a.SendMsg(response(1000)); err != nil {
		t.Fatal(err)
	}
	// Small updates never wait.
	if err := c.SendMsg(response(3)); err != nil {
		t.Fatal(err)
	}
	// c's resync waits until a's is answered.
	sent := make(chan error, 1)
	go func() { sent <- c.SendMsg(response(600)) }()
	select {
	case err := <-sent:
		t.Fatalf("a second resync went out (%v) while the first was unanswered, want it to wait", err)
	case <-time.After(50 * time.Millisecond):
	}
	recvd := make(chan error, 1)
	go func() { recvd <- a.RecvMsg(nil) }()
	a.ServerStream.(*fakeServerStream).answer <- nil
	if err := <-recvd; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-sent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting resync was not sent once the first was answered")
	}

	// A stream that ends gives its share back; one whose context ends
	// stops waiting.
	c.release()
	if !b.sem.TryAcquire(1000) {
		t.Fatal("the budget was not whole again once every stream gave its share back")
	}
	cancel()
	if err := a.SendMsg(response(10)); err != nil {
		t.Errorf("a small update failed: %v", err)
	}
	if err := a.SendMsg(response(500)); !errors.Is(err, context.Canceled) {
		t.Errorf("a resync waiting on an ended stream = %v, want context.Canceled", err)
	}
}
