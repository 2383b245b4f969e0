package server

import (
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

// Bounds of the resync budget.
const (
	// defaultResyncBudget is how many resources large config-stream
	// responses may carry in all, sent but not yet acknowledged: a full
	// set is a few hundred bytes per resource, so this holds the encoded
	// responses in flight to some tens of megabytes.
	defaultResyncBudget = 50_000
	// smallResponse responses (every update but a resync) never wait.
	smallResponse = 256
	// maxHold is the longest a response keeps its share: a node that reads
	// but never answers must not starve every other resync.
	maxHold = 30 * time.Second
)

// resyncBudget bounds the config-stream responses in flight. After an
// operator restart every node resyncs at once, and each one's first
// response holds its whole set; encoded, each is megabytes at 10,000 pods,
// and it stays in memory until the node has read it. A large response
// takes its size from the budget when it is sent and gives it back when
// the node answers it (meshstream allows one unanswered response per
// stream) or its stream ends, so the operator's memory no longer grows
// with the number of nodes resyncing. It is safe for concurrent use.
type resyncBudget struct {
	sem  *semaphore.Weighted
	size int64
}

func newResyncBudget(size int64) *resyncBudget {
	return &resyncBudget{sem: semaphore.NewWeighted(size), size: size}
}

// interceptor applies the budget to MeshConfig streams.
func (b *resyncBudget) interceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != meshv1.MeshConfig_DeltaStream_FullMethodName {
		return handler(srv, ss)
	}
	bs := &budgetedStream{ServerStream: ss, budget: b}
	defer bs.release()
	return handler(srv, bs)
}

// budgetedStream is one stream's share of the budget.
type budgetedStream struct {
	grpc.ServerStream
	budget *resyncBudget

	// mu guards the fields below; SendMsg and RecvMsg run on different
	// goroutines.
	mu   sync.Mutex
	held int64
	// expire gives held back after maxHold; nil when nothing is held.
	expire *time.Timer
}

// weight is what a response takes from the budget; 0 for small ones.
func (b *resyncBudget) weight(m any) int64 {
	resp, ok := m.(*meshv1.DeltaResponse)
	if !ok {
		return 0
	}
	n := int64(len(resp.GetResources()) + len(resp.GetRemovedResources()))
	if n < smallResponse {
		return 0
	}
	return min(n, b.size)
}

func (s *budgetedStream) SendMsg(m any) error {
	if w := s.budget.weight(m); w > 0 {
		// A stream's previous response was answered before meshstream
		// sends the next, so what it held is normally back already.
		s.release()
		if err := s.budget.sem.Acquire(s.Context(), w); err != nil {
			return err
		}
		s.mu.Lock()
		s.held = w
		s.expire = time.AfterFunc(maxHold, s.release)
		s.mu.Unlock()
	}
	return s.ServerStream.SendMsg(m)
}

func (s *budgetedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	// Every request after the hello answers the response in flight; an
	// error ends the stream.
	s.release()
	return err
}

func (s *budgetedStream) release() {
	s.mu.Lock()
	w := s.held
	s.held = 0
	if s.expire != nil {
		s.expire.Stop()
		s.expire = nil
	}
	s.mu.Unlock()
	if w > 0 {
		s.budget.sem.Release(w)
	}
}
