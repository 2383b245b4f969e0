package meshstream

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Authenticate returns the node that a stream's credentials belong to
	// (the operator: a TokenReview of the caller's bearer token, the node
	// taken from the review). Required. It runs once per stream, before the
	// first request is read; the node a request names is only checked
	// against it, never believed. An error that is a gRPC status reaches the
	// client as is, any other error as Unauthenticated.
	Authenticate func(ctx context.Context) (node string, err error)
	// OnAck, if set, is called when a stream of node has applied and
	// acknowledged the response that brought it to systemVersion; at is when
	// the ACK arrived. It runs on the stream's goroutine, outside any lock:
	// keep it short.
	OnAck func(node, systemVersion string, at time.Time)
	// OnNack, if set, is called when a stream of node refused the response
	// that would have brought it to systemVersion; detail is the client's
	// error. Same rules as OnAck.
	OnNack func(node, systemVersion, detail string, at time.Time)
	// Registerer receives the server's metrics; nil exports none.
	Registerer prometheus.Registerer
	// Instance identifies this server process to reconnecting clients, who
	// resume only with the instance they last applied a response from; ""
	// picks a random one. Every process must have its own: versions of two
	// processes are not comparable.
	Instance string
}

// Server is the operator's end of the config stream: it holds each node's
// desired resource set (SetNode) and brings every stream of that node to
// it with delta responses, as mesh.proto's state machine says. It is safe
// for concurrent use.
type Server struct {
	opts     ServerOptions
	log      *slog.Logger
	metrics  *serverMetrics
	instance string

	// mu guards the fields below. Lock order: Server.mu, then nodeState.mu.
	mu     sync.Mutex
	nodes  map[string]*nodeState
	nextID uint64
	// lastShared is the set of the latest SetNodes.
	lastShared *sharedSet
}

// nodeState is one node's desired set and its connected streams.
type nodeState struct {
	name string

	// mu guards the fields below and the fields of this node's streams
	// marked "guarded by node.mu".
	mu sync.Mutex
	// known is false until the first SetNode: a node whose set is unknown
	// is sent nothing, so it keeps what it holds.
	known   bool
	desired map[string]*meshv1.Resource
	// shared is the SetNodes set desired belongs to, nil when this node's
	// map is its own (PatchNode); desired is then read-only.
	shared        *sharedSet
	systemVersion string
	// gen counts the changes of desired or systemVersion; it starts at 1 so
	// that a stream's nackedGen of 0 means "no NACK".
	gen     uint64
	streams map[*streamState]struct{}
	// changes are the names each of the latest gens changed, oldest first,
	// gens contiguous, ending at gen (or empty): a stream that holds exactly
	// an older gen's set diffs only those names instead of the whole set.
	changes []genChange
}

// genChange is one entry of nodeState.changes.
type genChange struct {
	gen   uint64
	names []string
}

// maxChanges bounds nodeState.changes; a stream further behind gets a full
// diff, which is as correct, only slower.
const maxChanges = 64

// streamState is one connected DeltaStream.
type streamState struct {
	id          uint64
	node        *nodeState
	peer        string
	connectedAt time.Time
	resumed     bool
	// kick wakes the stream's sender; capacity 1, never closed.
	kick chan struct{}

	// guarded by node.mu:

	// acked maps each resource the client holds to its version as this
	// server knows it; "" (never a real version) marks a resource whose
	// version the client stated to another server instance, so that a full
	// resync sends it again.
	acked       map[string]string
	ackedSystem string
	ackedAt     time.Time
	hasAcked    bool
	// sent is true once the stream got its first response.
	sent    bool
	pending *pendingResponse
	// syncedGen, when not 0, is the node's gen whose desired set acked
	// equals exactly (the stream ACKed a response computed at that gen).
	syncedGen uint64
	// nackedGen is the node's gen whose response was NACKed last: nothing
	// is resent until the node's set changes again.
	nackedGen  uint64
	lastNack   string
	lastNackAt time.Time
	nonces     uint64
}

// pendingResponse is the one unacknowledged response of a stream.
type pendingResponse struct {
	nonce         string
	gen           uint64
	systemVersion string
	changed       []*meshv1.Resource
	removed       []string
	sentAt        time.Time
}

// NewServer returns a Server with no nodes. Register it on a grpc.Server to
// serve it.
func NewServer(opts ServerOptions, log *slog.Logger) (*Server, error) {
	if opts.Authenticate == nil {
		return nil, errors.New("create config stream server: no Authenticate")
	}
	m, err := newServerMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	instance := opts.Instance
	if instance == "" {
		instance = rand.Text()
	}
	return &Server{
		opts:     opts,
		log:      log.With("component", "meshstream-server", "instance", instance),
		metrics:  m,
		instance: instance,
		nodes:    make(map[string]*nodeState),
	}, nil
}

// Instance returns the instance this server states in its responses.
func (s *Server) Instance() string { return s.instance }

// Register registers the MeshConfig service on gs. A reconnecting client's
// first request lists every resource it holds (about 60 bytes each), so
// serve it with a grpc.MaxRecvMsgSize above gRPC's 4 MiB default when
// nodes hold more than some 50,000 resources.
func (s *Server) Register(gs *grpc.Server) {
	meshv1.RegisterMeshConfigServer(gs, service{s: s})
}

// service adapts Server to the generated interface, keeping DeltaStream out
// of Server's own API.
type service struct {
	meshv1.UnimplementedMeshConfigServer
	s *Server
}

func (sv service) DeltaStream(ss meshv1.MeshConfig_DeltaStreamServer) error {
	return sv.s.serve(ss)
}

// SetNode makes resources, as a whole, node's desired set at systemVersion.
// Every stream of node is then sent the resources whose version differs
// from what it acknowledged and the removal of those it holds but the set
// lacks. Calling it again with the same versions and systemVersion sends
// nothing. Names must be unique, versions non-empty, and each name must
// match its body's kind (meshv1.NameMatchesBody). The resources are shared
// with the streams: do not modify them afterwards.
func (s *Server) SetNode(node string, resources []*meshv1.Resource, systemVersion string) error {
	return s.SetNodes([]string{node}, resources, systemVersion)
}

// SetNodes is SetNode for many nodes that get the same set: the set is
// checked and indexed once and, for every node that held the previous
// shared set, diffed once, so handing one set to N nodes costs about one
// node's work plus O(changes) per node instead of N passes over the set —
// and the nodes share one index instead of holding a copy each. On an
// error nothing changes.
func (s *Server) SetNodes(nodes []string, resources []*meshv1.Resource, systemVersion string) error {
	for _, node := range nodes {
		if node == "" {
			return errors.New("set node config: empty node name")
		}
	}
	desired := make(map[string]*meshv1.Resource, len(resources))
	for _, r := range resources {
		if err := checkResource(r); err != nil {
			return fmt.Errorf("set config of nodes %s: %w", nodeList(nodes), err)
		}
		if _, dup := desired[r.GetName()]; dup {
			return fmt.Errorf("set config of nodes %s: resource %q given twice", nodeList(nodes), r.GetName())
		}
		desired[r.GetName()] = r
	}
	set := &sharedSet{desired: desired}

	// The diff against the last shared set, computed at most once.
	s.mu.Lock()
	prev := s.lastShared
	s.lastShared = set
	s.mu.Unlock()
	var prevChanged []string
	prevDone := false

	for _, node := range nodes {
		n := s.nodeFor(node)
		var changed []string
		if n.known && prev != nil && n.shared == prev {
			if !prevDone {
				prevChanged = diffNames(prev.desired, desired)
				prevDone = true
			}
			changed = prevChanged
		} else {
			changed = diffNames(n.desired, desired)
		}
		if n.known && n.systemVersion == systemVersion && len(changed) == 0 {
			n.shared = set // same content: adopt the new index so the next diff is shared too
			n.desired = desired
			n.mu.Unlock()
			continue
		}
		if !n.known {
			n.changes = nil
		}
		n.known = true
		n.desired = desired
		n.shared = set
		n.systemVersion = systemVersion
		n.recordLocked(changed)
		n.mu.Unlock()
	}
	return nil
}

// sharedSet is one desired set handed to several nodes by SetNodes. Its
// map is never modified: PatchNode copies it first.
type sharedSet struct {
	desired map[string]*meshv1.Resource
}

// diffNames returns the names whose resource differs (by version) between
// old and cur, or that only one of them has.
func diffNames(old, cur map[string]*meshv1.Resource) []string {
	var changed []string
	for name, r := range cur {
		if o, ok := old[name]; !ok || o.GetVersion() != r.GetVersion() {
			changed = append(changed, name)
		}
	}
	for name := range old {
		if _, ok := cur[name]; !ok {
			changed = append(changed, name)
		}
	}
	return changed
}

// nodeList names nodes in an error, shortened when there are many.
func nodeList(nodes []string) string {
	if len(nodes) <= 3 {
		return strings.Join(nodes, ",")
	}
	return fmt.Sprintf("%s,… (%d nodes)", strings.Join(nodes[:3], ","), len(nodes))
}

// PatchNode changes node's desired set by upserting resources and removing
// the names in remove, and sets its system version: the same as a SetNode
// of the resulting set, at a cost that grows with the change rather than
// with the set. It fails, changing nothing, when node has no set yet (use
// SetNode first), when a name is given twice, or a resource is invalid
// (see SetNode). Removing a name the set lacks is not an error. The
// resources are shared with the streams: do not modify them afterwards.
func (s *Server) PatchNode(node string, resources []*meshv1.Resource, remove []string, systemVersion string) error {
	seen := make(map[string]bool, len(resources)+len(remove))
	for _, r := range resources {
		if err := checkResource(r); err != nil {
			return fmt.Errorf("patch config of node %s: %w", node, err)
		}
		if seen[r.GetName()] {
			return fmt.Errorf("patch config of node %s: resource %q given twice", node, r.GetName())
		}
		seen[r.GetName()] = true
	}
	for _, name := range remove {
		if seen[name] {
			return fmt.Errorf("patch config of node %s: resource %q given twice", node, name)
		}
		seen[name] = true
	}
	s.mu.Lock()
	n := s.nodes[node]
	if n == nil {
		s.mu.Unlock()
		return fmt.Errorf("patch config of node %s: no set to patch", node)
	}
	n.mu.Lock()
	s.mu.Unlock()
	defer n.mu.Unlock()
	if !n.known {
		return fmt.Errorf("patch config of node %s: no set to patch", node)
	}
	var changed []string
	for _, r := range resources {
		if o, ok := n.desired[r.GetName()]; !ok || o.GetVersion() != r.GetVersion() {
			changed = append(changed, r.GetName())
		}
	}
	for _, name := range remove {
		if _, ok := n.desired[name]; ok {
			changed = append(changed, name)
		}
	}
	if n.systemVersion == systemVersion && len(changed) == 0 {
		return nil
	}
	if n.shared != nil {
		// The map is shared with other nodes: patch a copy.
		n.desired = maps.Clone(n.desired)
		n.shared = nil
	}
	for _, r := range resources {
		n.desired[r.GetName()] = r
	}
	for _, name := range remove {
		delete(n.desired, name)
	}
	n.systemVersion = systemVersion
	n.recordLocked(changed)
	return nil
}

// DeleteNode forgets node's desired set (the node left the cluster). Its
// streams stay connected but are sent nothing until the next SetNode.
func (s *Server) DeleteNode(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[node]
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.known = false
	n.desired = nil
	n.shared = nil
	n.systemVersion = ""
	n.gen++
	n.changes = nil
	if len(n.streams) == 0 {
		delete(s.nodes, node)
	}
}

// nodeFor returns node's state, created if needed, with its mu held.
func (s *Server) nodeFor(node string) *nodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[node]
	if n == nil {
		n = &nodeState{name: node, gen: 1, streams: make(map[*streamState]struct{})}
		s.nodes[node] = n
	}
	n.mu.Lock()
	return n
}

// recordLocked starts a new gen that changed names, and wakes the
// streams. n.mu must be held.
func (n *nodeState) recordLocked(names []string) {
	n.gen++
	if len(n.changes) == maxChanges {
		n.changes = slices.Delete(n.changes, 0, 1)
	}
	n.changes = append(n.changes, genChange{gen: n.gen, names: names})
	n.kickLocked()
}

// kickLocked wakes every stream's sender. n.mu must be held.
func (n *nodeState) kickLocked() {
	for st := range n.streams {
		st.wake()
	}
}

func (st *streamState) wake() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

// Acked returns the system version that every connected stream of node has
// acknowledged. ok is false when node has no connected stream, or one that
// has acknowledged nothing yet or a different version than another.
func (s *Server) Acked(node string) (systemVersion string, ok bool) {
	s.mu.Lock()
	n := s.nodes[node]
	if n == nil {
		s.mu.Unlock()
		return "", false
	}
	n.mu.Lock()
	s.mu.Unlock()
	defer n.mu.Unlock()
	for st := range n.streams {
		if !st.hasAcked || (ok && st.ackedSystem != systemVersion) {
			return "", false
		}
		systemVersion, ok = st.ackedSystem, true
	}
	return systemVersion, ok
}

// NodeStatus is a snapshot of what the server knows about one node.
type NodeStatus struct {
	// Known is true once SetNode gave the node a set (and DeleteNode did
	// not remove it since).
	Known bool
	// SystemVersion is the desired set's version.
	SystemVersion string
	// Resources is the number of resources in the desired set.
	Resources int
	// Streams are the node's connected streams, oldest first.
	Streams []StreamStatus
}

// StreamStatus is one connected stream of a node.
type StreamStatus struct {
	// ID is unique within the server's lifetime.
	ID          uint64
	Peer        string
	ConnectedAt time.Time
	// Resumed is true when the client resumed from this server instance;
	// false when it got (or gets) a full resync.
	Resumed bool
	// AckedSystemVersion is the system version of the last ACKed response;
	// "" before the first ACK.
	AckedSystemVersion string
	AckedAt            time.Time
	// Pending is true while a response awaits its ACK or NACK.
	Pending bool
	// LastNack is the client's error of its last NACK; "" if none.
	LastNack   string
	LastNackAt time.Time
}

// Node returns node's status; ok is false when the server neither knows a
// set for node nor has a stream of it.
func (s *Server) Node(node string) (NodeStatus, bool) {
	s.mu.Lock()
	n := s.nodes[node]
	if n == nil {
		s.mu.Unlock()
		return NodeStatus{}, false
	}
	n.mu.Lock()
	s.mu.Unlock()
	defer n.mu.Unlock()
	ns := NodeStatus{Known: n.known, SystemVersion: n.systemVersion, Resources: len(n.desired)}
	for st := range n.streams {
		ns.Streams = append(ns.Streams, StreamStatus{
			ID:                 st.id,
			Peer:               st.peer,
			ConnectedAt:        st.connectedAt,
			Resumed:            st.resumed,
			AckedSystemVersion: st.ackedSystem,
			AckedAt:            st.ackedAt,
			Pending:            st.pending != nil,
			LastNack:           st.lastNack,
			LastNackAt:         st.lastNackAt,
		})
	}
	slices.SortFunc(ns.Streams, func(a, b StreamStatus) int { return cmp.Compare(a.ID, b.ID) })
	return ns, true
}

// ConnectedNodes returns, sorted, the nodes with at least one connected
// stream.
func (s *Server) ConnectedNodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, n := range s.nodes {
		n.mu.Lock()
		if len(n.streams) > 0 {
			out = append(out, name)
		}
		n.mu.Unlock()
	}
	slices.Sort(out)
	return out
}

// serve runs one DeltaStream: authenticate, hello, then a sender goroutine
// that pushes responses while this goroutine reads the ACKs and NACKs.
func (s *Server) serve(ss meshv1.MeshConfig_DeltaStreamServer) error {
	ctx := ss.Context()
	peerAddr := ""
	if p, ok := peer.FromContext(ctx); ok {
		peerAddr = p.Addr.String()
	}
	node, err := s.opts.Authenticate(ctx)
	if err != nil {
		s.metrics.refused.WithLabelValues(reasonUnauthenticated).Inc()
		s.log.Warn("refuse config stream", "peer", peerAddr, "err", err)
		if _, isStatus := status.FromError(err); isStatus {
			return err
		}
		return status.Errorf(codes.Unauthenticated, "authenticate config stream: %v", err)
	}
	first, err := ss.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	if first.GetNode() != node {
		s.metrics.refused.WithLabelValues(reasonWrongNode).Inc()
		s.log.Warn("refuse config stream for another node", "peer", peerAddr, "node", node, "requested", first.GetNode())
		return status.Errorf(codes.PermissionDenied, "config stream of node %q: credentials are node %q's", first.GetNode(), node)
	}
	if first.GetResponseNonce() != "" || first.GetErrorDetail() != "" {
		s.metrics.refused.WithLabelValues(reasonProtocol).Inc()
		return status.Error(codes.InvalidArgument, "first request of a config stream answers no response")
	}
	st := s.attach(node, peerAddr, first)
	defer s.detach(st)
	log := s.log.With("node", node, "stream", st.id)
	log.Info("config stream connected", "peer", peerAddr, "resumed", st.resumed, "held", len(first.GetInitialResourceVersions()))

	sendCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() { sendErr = s.sendLoop(sendCtx, ss, st) })
	err = s.recvLoop(ss, st, log)
	cancel()
	wg.Wait()
	if err == nil && sendErr != nil && ctx.Err() == nil {
		err = sendErr
	}
	log.Info("config stream ended", "err", err)
	return err
}

// attach registers a new stream of node whose hello is first.
func (s *Server) attach(node, peerAddr string, first *meshv1.DeltaRequest) *streamState {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	n := s.nodes[node]
	if n == nil {
		n = &nodeState{name: node, gen: 1, streams: make(map[*streamState]struct{})}
		s.nodes[node] = n
	}
	held := first.GetInitialResourceVersions()
	st := &streamState{
		id:          s.nextID,
		node:        n,
		peer:        peerAddr,
		connectedAt: time.Now(),
		resumed:     first.GetServerInstance() == s.instance,
		kick:        make(chan struct{}, 1),
		acked:       make(map[string]string, len(held)),
	}
	for name, v := range held {
		if !st.resumed {
			v = ""
		}
		st.acked[name] = v
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.streams[st] = struct{}{}
	if len(n.streams) == 1 {
		s.metrics.nodes.Inc()
	}
	s.metrics.streams.Inc()
	st.wake()
	return st
}

// detach unregisters st, dropping its node's entry once it has neither
// streams nor a set.
func (s *Server) detach(st *streamState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := st.node
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.streams, st)
	s.metrics.streams.Dec()
	if len(n.streams) == 0 {
		s.metrics.nodes.Dec()
		if !n.known {
			delete(s.nodes, n.name)
		}
	}
}

// sendLoop sends st's next response whenever it is woken and one is due.
func (s *Server) sendLoop(ctx context.Context, ss meshv1.MeshConfig_DeltaStreamServer, st *streamState) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-st.kick:
		}
		resp := s.nextResponse(st)
		if resp == nil {
			continue
		}
		if err := ss.Send(resp); err != nil {
			return fmt.Errorf("send config to node %s: %w", st.node.name, err)
		}
		s.metrics.pushes.Inc()
		s.metrics.resourcesSent.Add(float64(len(resp.Resources)))
		s.metrics.removalsSent.Add(float64(len(resp.RemovedResources)))
	}
}

// nextResponse returns the response that brings st from what it
// acknowledged to its node's desired set, and marks it pending; nil when
// none is due: one is outstanding, the set is unknown, the set is the one
// the client refused last, or nothing differs.
func (s *Server) nextResponse(st *streamState) *meshv1.DeltaResponse {
	n := st.node
	n.mu.Lock()
	defer n.mu.Unlock()
	if st.pending != nil || !n.known || st.nackedGen == n.gen {
		return nil
	}
	changed, removed := st.diffLocked()
	if st.sent && len(changed) == 0 && len(removed) == 0 && st.ackedSystem == n.systemVersion {
		return nil
	}
	slices.SortFunc(changed, func(a, b *meshv1.Resource) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.Sort(removed)
	st.nonces++
	p := &pendingResponse{
		nonce:         strconv.FormatUint(st.nonces, 10),
		gen:           n.gen,
		systemVersion: n.systemVersion,
		changed:       changed,
		removed:       removed,
		sentAt:        time.Now(),
	}
	st.pending = p
	st.sent = true
	return &meshv1.DeltaResponse{
		SystemVersionInfo: p.systemVersion,
		Resources:         changed,
		RemovedResources:  removed,
		Nonce:             p.nonce,
		ServerInstance:    s.instance,
	}
}

// diffLocked returns the resources of the node's desired set that st does
// not hold at their version, and the names st holds that the set lacks.
// node.mu must be held.
func (st *streamState) diffLocked() (changed []*meshv1.Resource, removed []string) {
	n := st.node
	if names, ok := n.changedSinceLocked(st.syncedGen); ok {
		seen := make(map[string]bool, len(names))
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			if r, ok := n.desired[name]; ok {
				if v, held := st.acked[name]; !held || v != r.GetVersion() {
					changed = append(changed, r)
				}
			} else if _, held := st.acked[name]; held {
				removed = append(removed, name)
			}
		}
		return changed, removed
	}
	for name, r := range n.desired {
		if v, ok := st.acked[name]; !ok || v != r.GetVersion() {
			changed = append(changed, r)
		}
	}
	for name := range st.acked {
		if _, ok := n.desired[name]; !ok {
			removed = append(removed, name)
		}
	}
	return changed, removed
}

// changedSinceLocked returns the names changed after gen; ok is false when
// n.changes does not reach back that far. n.mu must be held.
func (n *nodeState) changedSinceLocked(gen uint64) (names []string, ok bool) {
	if gen == 0 || gen > n.gen {
		return nil, false
	}
	if gen == n.gen {
		return nil, true
	}
	i, found := slices.BinarySearchFunc(n.changes, gen+1, func(c genChange, g uint64) int { return cmp.Compare(c.gen, g) })
	if !found {
		return nil, false
	}
	for _, c := range n.changes[i:] {
		names = append(names, c.names...)
	}
	return names, true
}

// recvLoop reads st's ACKs and NACKs until the stream ends; nil when the
// client closed it.
func (s *Server) recvLoop(ss meshv1.MeshConfig_DeltaStreamServer, st *streamState, log *slog.Logger) error {
	for {
		req, err := ss.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if req.GetNode() != "" || len(req.GetInitialResourceVersions()) > 0 || req.GetServerInstance() != "" {
			s.metrics.refused.WithLabelValues(reasonProtocol).Inc()
			return status.Error(codes.InvalidArgument, "only the first request of a config stream may state node, versions or instance")
		}
		if err := s.answer(st, req, log); err != nil {
			s.metrics.refused.WithLabelValues(reasonProtocol).Inc()
			return err
		}
	}
}

// answer applies one ACK or NACK to st.
func (s *Server) answer(st *streamState, req *meshv1.DeltaRequest, log *slog.Logger) error {
	now := time.Now()
	n := st.node
	n.mu.Lock()
	p := st.pending
	if p == nil || req.GetResponseNonce() != p.nonce {
		n.mu.Unlock()
		return status.Errorf(codes.InvalidArgument, "answer to response %q: not the outstanding response", req.GetResponseNonce())
	}
	st.pending = nil
	nack := req.GetErrorDetail()
	if nack == "" {
		for _, r := range p.changed {
			st.acked[r.GetName()] = r.GetVersion()
		}
		for _, name := range p.removed {
			delete(st.acked, name)
		}
		st.ackedSystem = p.systemVersion
		st.ackedAt = now
		st.hasAcked = true
		st.syncedGen = p.gen
	} else {
		st.nackedGen = p.gen
		st.lastNack = nack
		st.lastNackAt = now
	}
	if n.gen != p.gen {
		// The set changed while the response was outstanding.
		st.wake()
	}
	n.mu.Unlock()

	s.metrics.ackLatency.Observe(now.Sub(p.sentAt).Seconds())
	if nack == "" {
		s.metrics.acks.Inc()
		if s.opts.OnAck != nil {
			s.opts.OnAck(n.name, p.systemVersion, now)
		}
		return nil
	}
	s.metrics.nacks.Inc()
	log.Warn("node refused config", "system_version", p.systemVersion, "changed", len(p.changed), "removed", len(p.removed), "err", nack)
	if s.opts.OnNack != nil {
		s.opts.OnNack(n.name, p.systemVersion, nack, now)
	}
	return nil
}

// checkResource reports why r cannot be part of a set.
func checkResource(r *meshv1.Resource) error {
	switch {
	case r == nil:
		return errors.New("nil resource")
	case r.GetName() == "":
		return errors.New("resource without a name")
	case r.GetVersion() == "":
		return fmt.Errorf("resource %q without a version", r.GetName())
	case !meshv1.NameMatchesBody(r):
		return fmt.Errorf("resource %q: name does not match its body's kind", r.GetName())
	}
	return nil
}
