package replication

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/troupe-go/troupe/internal/quorum"
	"github.com/troupe-go/troupe/internal/transport"
	"github.com/troupe-go/troupe/internal/wire"
	"github.com/troupe-go/troupe/membership"
)

// Sessions is this node's share of the cluster's replicated sessions: the
// sessions it serves as primary and the copies it keeps as secondary for
// other nodes. Create it with NewSessions and stop it with Shutdown or
// Leave. All methods are safe for concurrent use.
type Sessions struct {
	cluster *membership.Cluster
	opts    Options
	log     *slog.Logger
	tr      *transport.Transport
	self    string // node name
	selfID  string // NodeID(self)
	inc     uint64 // incarnation: random, tells a restarted peer from the one before
	addr    string // published transport address
	start   time.Time

	ctx    context.Context // ends at Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of Sessions
	sub    *membership.Subscription
	kick   chan struct{} // wakes the janitor early

	tomb     keyTable // invalidated keys
	moved    keyTable // key -> the node a session moved to
	nPrimary atomic.Int64
	nSecond  atomic.Int64
	stats    counters

	// Lock order: an entry's wl first; then at most one of mu, pmu, an
	// entry's mu, a group queue's mu, except that async (the queue table)
	// may be held while taking mu to start a queue's goroutine.
	mu struct {
		sync.RWMutex
		closed  bool
		entries map[string]*entry
		taking  map[string]chan struct{} // keys being acquired from peers
	}
	pmu struct {
		sync.Mutex
		peers   map[string]*peer
		byID    map[string]string // NodeID -> name, live peers with a transport
		changed chan struct{}     // closed and replaced on every peer change
	}
	async struct {
		sync.Mutex
		queues map[string]*asyncQueue // ModeAsync: changes waiting for each secondary
		groups map[string]*groupQueue // ModeSync: group commit per secondary
	}
}

// peer is what this node knows about another member.
type peer struct {
	name  string
	id    string
	addr  string // its session transport, "" if it has none
	group string
	alive bool // a live member with a session transport
	// failed says that membership declared it failed (rather than that
	// it left) when it last went down, at downAt.
	failed bool
	downAt time.Time

	// This node as primary, the peer as secondary.
	leaseUntil time.Time // we may serve copies it backs until then
	gen        uint64    // its lease generation for us, as last reported
	count      int       // secondary copies it holds, as last reported
	pending    int       // copies we are sending it now

	// This node as secondary, the peer as primary.
	grantedUntil time.Time // the peer may serve copies we back until then
	grantGen     uint64    // bumped whenever we take over one of its sessions
}

type counters struct {
	created, saves, fullCopies, takeovers, promotions, rehomes, expired, invalidated, staleDrops atomic.Uint64
}

// Stats are counters since NewSessions, plus the copies held now.
type Stats struct {
	Primaries   int    // sessions this node serves
	Secondaries int    // copies this node keeps for other primaries
	Created     uint64 // sessions created here
	Saves       uint64 // Saves that changed something
	FullCopies  uint64 // full copies sent to a secondary (new secondary, gap, repair)
	Takeovers   uint64 // sessions this node took from another node on Get
	Promotions  uint64 // secondary copies promoted because their primary failed
	Rehomes     uint64 // sessions given a new secondary because theirs failed or was missing
	Expired     uint64 // copies removed for idleness, either role
	Invalidated uint64
	StaleDrops  uint64 // copies dropped because another node held a newer one
}

// NewSessions starts this node's session store on cluster: it starts the
// session transport, publishes its address in the local member's tags
// (TagKey), and follows membership events to fail over. ctx bounds
// only the start.
func NewSessions(ctx context.Context, cluster *membership.Cluster, opts Options) (*Sessions, error) {
	if cluster == nil {
		return nil, fmt.Errorf("%w: nil cluster", ErrInvalidOptions)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if o.BindAddr == "" {
		host, _, err := net.SplitHostPort(cluster.Addr())
		if err != nil {
			return nil, fmt.Errorf("%w: cluster address %q: %v", ErrInvalidOptions, cluster.Addr(), err)
		}
		o.BindAddr = net.JoinHostPort(host, "0")
	}
	s := &Sessions{
		cluster: cluster,
		opts:    o,
		self:    cluster.Name(),
		selfID:  NodeID(cluster.Name()),
		start:   time.Now(),
		kick:    make(chan struct{}, 1),
		inc:     rand.Uint64() | 1,
	}
	s.log = o.Logger.With("node", s.self)
	s.mu.entries = map[string]*entry{}
	s.mu.taking = map[string]chan struct{}{}
	s.pmu.peers = map[string]*peer{}
	s.pmu.byID = map[string]string{}
	s.pmu.changed = make(chan struct{})
	s.async.queues = map[string]*asyncQueue{}

	tcfg := transport.Config{
		BindAddr:     o.BindAddr,
		MaxFrameSize: max(o.MaxSessionSize+frameOverhead, defaultFrameFloor),
		TLS:          o.TLS,
		Logger:       o.Logger,
		Faults:       o.Faults,
	}
	if o.TLS == nil {
		tcfg.Keys = cluster.Keys()
	}
	tr, err := transport.New(ctx, tcfg, server{s})
	if err != nil {
		return nil, fmt.Errorf("replication: start transport: %w", err)
	}
	s.tr = tr
	s.addr = tr.Addr()
	if host, port, _ := net.SplitHostPort(s.addr); net.ParseIP(host).IsUnspecified() {
		chost, _, _ := net.SplitHostPort(cluster.Addr())
		s.addr = net.JoinHostPort(chost, port)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.sub = cluster.Subscribe()
	err = cluster.UpdateMeta(ctx, func(m *membership.Meta) {
		if m.Tags == nil {
			m.Tags = map[string]string{}
		}
		m.Tags[TagKey] = s.addr
	})
	if err != nil {
		s.cancel()
		s.sub.Close()
		_ = tr.Shutdown()
		return nil, fmt.Errorf("replication: publish transport address: %w", err)
	}
	s.wg.Go(s.eventLoop)
	s.wg.Go(s.janitor)
	s.log.Info("sessions started", "addr", s.addr, "id", s.selfID, "mode", o.Mode)
	return s, nil
}

// NodeID returns this node's id in session routes.
func (s *Sessions) NodeID() string { return s.selfID }

// Addr returns the session transport's published address.
func (s *Sessions) Addr() string { return s.addr }

// Peers returns the names of the other nodes that hold sessions, as this
// node sees them now (secondaries are placed among them), sorted.
func (s *Sessions) Peers() []string {
	s.pmu.Lock()
	var out []string
	for _, p := range s.pmu.peers {
		if p.alive {
			out = append(out, p.name)
		}
	}
	s.pmu.Unlock()
	slices.Sort(out)
	return out
}

// Stats returns counters and the number of copies held.
func (s *Sessions) Stats() Stats {
	c := &s.stats
	return Stats{
		Primaries:   int(s.nPrimary.Load()),
		Secondaries: int(s.nSecond.Load()),
		Created:     c.created.Load(),
		Saves:       c.saves.Load(),
		FullCopies:  c.fullCopies.Load(),
		Takeovers:   c.takeovers.Load(),
		Promotions:  c.promotions.Load(),
		Rehomes:     c.rehomes.Load(),
		Expired:     c.expired.Load(),
		Invalidated: c.invalidated.Load(),
		StaleDrops:  c.staleDrops.Load(),
	}
}

// Leave removes this node's transport address from its member tags, so
// that every secondary of a session this node serves promotes its copy
// and every primary whose secondary is here picks another, and then shuts
// down like Shutdown. In sync mode no saved change is lost. ctx bounds
// the announcement.
func (s *Sessions) Leave(ctx context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	err := s.cluster.UpdateMeta(ctx, func(m *membership.Meta) { delete(m.Tags, TagKey) })
	s.Shutdown()
	if err != nil {
		return fmt.Errorf("replication: leave: %w", err)
	}
	return nil
}

// Shutdown stops at once, as a crash would: peers fail over when
// membership reports this node failed or gone, or when its member tag
// disappears. Calls in flight fail with ErrClosed or ErrUnavailable. It
// waits for every goroutine to return and is safe to call twice. It does
// not shut the cluster down.
func (s *Sessions) Shutdown() {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return
	}
	s.mu.closed = true
	s.mu.Unlock()
	s.cancel()
	s.sub.Close()
	_ = s.tr.Shutdown()
	s.wg.Wait()
	s.log.Info("sessions stopped")
}

func (s *Sessions) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.closed
}

// handlerWait bounds how long a request from a peer waits for a
// session's lock.
func (s *Sessions) handlerWait() time.Duration { return max(s.opts.LeaseTerm/2, minTimeout) }

// movedTo remembers that key's session went to name.
func (s *Sessions) movedTo(key, name string) {
	if name != "" && name != s.self {
		s.moved.put(key, name, s.tombTTL())
	}
}

// now is the monotonic clock entries record their last access with.
func (s *Sessions) now() int64 { return int64(time.Since(s.start)) }

// ---- the table of entries ----

func (s *Sessions) lookup(key string) *entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.entries[key]
}

// insert adds e unless the key is taken, and returns the entry in the
// table.
func (s *Sessions) insert(e *entry) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil, ErrClosed
	}
	if old := s.mu.entries[e.key]; old != nil {
		return old, nil
	}
	s.mu.entries[e.key] = e
	return e, nil
}

func (s *Sessions) entries() []*entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*entry, 0, len(s.mu.entries))
	for _, e := range s.mu.entries {
		out = append(out, e)
	}
	return out
}

// publish replaces e's state with st, unless e was dropped meanwhile; a
// state with roleNone drops it. It keeps the role counters right.
func (s *Sessions) publish(e *entry, st state) bool {
	e.mu.Lock()
	if e.dead {
		e.mu.Unlock()
		return false
	}
	old := e.st.role
	e.st = st
	e.dead = st.role == roleNone
	e.mu.Unlock()
	s.countRole(old, -1)
	s.countRole(st.role, +1)
	if st.role == roleNone {
		s.mu.Lock()
		if s.mu.entries[e.key] == e {
			delete(s.mu.entries, e.key)
		}
		s.mu.Unlock()
	}
	return true
}

// drop removes e from the table whatever its state (invalidation, or
// under e's write lock); handles on it get ErrStale.
func (s *Sessions) drop(e *entry, reason string) {
	if s.publish(e, state{role: roleNone}) {
		s.log.Debug("dropped a session copy", "key", e.key, "reason", reason)
	}
}

// dropIf drops e only if it still holds the copy that st, an earlier
// snapshot, describes (same role, epoch and primary): a decision made on
// a snapshot must not drop a copy that changed meanwhile, such as a
// secondary copy promoted in place by a concurrent Get.
func (s *Sessions) dropIf(e *entry, st state, reason string) bool {
	e.mu.Lock()
	if e.dead || e.st.role != st.role || e.st.epoch != st.epoch || e.st.primary != st.primary {
		e.mu.Unlock()
		return false
	}
	old := e.st.role
	e.st = state{}
	e.dead = true
	e.mu.Unlock()
	s.countRole(old, -1)
	s.mu.Lock()
	if s.mu.entries[e.key] == e {
		delete(s.mu.entries, e.key)
	}
	s.mu.Unlock()
	s.log.Debug("dropped a session copy", "key", e.key, "reason", reason)
	return true
}

func (s *Sessions) countRole(r role, d int64) {
	switch r {
	case rolePrimary:
		s.nPrimary.Add(d)
	case roleSecondary:
		s.nSecond.Add(d)
	}
}

// ---- peers ----

func (s *Sessions) peerLocked(name string) *peer {
	p := s.pmu.peers[name]
	if p == nil {
		p = &peer{name: name, id: NodeID(name)}
		s.pmu.peers[name] = p
	}
	return p
}

// changedLocked wakes everyone waiting for a peer change.
func (s *Sessions) changedLocked() {
	close(s.pmu.changed)
	s.pmu.changed = make(chan struct{})
}

func (s *Sessions) changes() <-chan struct{} {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.pmu.changed
}

// addrOf returns a live peer's transport address.
func (s *Sessions) addrOf(name string) (string, bool) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	p := s.pmu.peers[name]
	if p == nil || !p.alive {
		return "", false
	}
	return p.addr, true
}

func (s *Sessions) isAlive(name string) bool {
	_, ok := s.addrOf(name)
	return ok
}

// idOf returns a node's id in routes, cached for known peers.
func (s *Sessions) idOf(name string) string {
	if name == s.self {
		return s.selfID
	}
	s.pmu.Lock()
	p := s.pmu.peers[name]
	s.pmu.Unlock()
	if p != nil {
		return p.id
	}
	return NodeID(name)
}

// nameOf maps a node id from a route to a live peer's name.
func (s *Sessions) nameOf(id string) (string, bool) {
	if id == "" {
		return "", false
	}
	if id == s.selfID {
		return s.self, true
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	n, ok := s.pmu.byID[id]
	return n, ok
}

// liveCount is the number of nodes with sessions this node sees, itself
// included: the "members" part of a copy's rank.
func (s *Sessions) liveCount() int {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	n := 1
	for _, p := range s.pmu.peers {
		if p.alive {
			n++
		}
	}
	return n
}

// fresh reports whether a primary copy may be served without asking its
// secondary: the secondary's lease is running and it has not taken over
// any of our sessions since it last confirmed this one.
func (s *Sessions) fresh(st state) bool {
	if st.secondary == "" {
		return true
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	p := s.pmu.peers[st.secondary]
	return p != nil && time.Now().Before(p.leaseUntil) && st.verifiedGen == p.gen
}

// contestedLive returns the peers in list that are alive now.
func (s *Sessions) contestedLive(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	var out []string
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, n := range list {
		if p := s.pmu.peers[n]; p != nil && p.alive {
			out = append(out, n)
		}
	}
	return out
}

// noteReply records what a peer's reply says about the lease it grants
// us, from a request sent at sent.
func (s *Sessions) noteReply(name string, sent time.Time, gen uint64, count int) {
	// A tenth of the term is left as margin for clock rate differences.
	until := sent.Add(s.opts.LeaseTerm - s.opts.LeaseTerm/10)
	s.pmu.Lock()
	defer s.pmu.Unlock()
	p := s.peerLocked(name)
	if until.After(p.leaseUntil) {
		p.leaseUntil = until
	}
	p.gen = max(p.gen, gen)
	p.count = count
}

func (s *Sessions) genOf(name string) uint64 {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.peerLocked(name).gen
}

// grant extends the lease of a peer that sent us a request.
func (s *Sessions) grant(from string) {
	until := time.Now().Add(s.opts.LeaseTerm)
	s.pmu.Lock()
	defer s.pmu.Unlock()
	p := s.peerLocked(from)
	if until.After(p.grantedUntil) {
		p.grantedUntil = until
	}
}

// grantGen returns the generation we report to a peer.
func (s *Sessions) grantGen(from string) uint64 {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.peerLocked(from).grantGen
}

var errPeerBack = errors.New("replication: peer is back")

// revoke waits until the lease this node granted to name has run out and
// bumps the generation it reports to name, so that name asks before
// serving any copy we back. Only then may this node take one of name's
// sessions over. With abortIfBack it gives up with errPeerBack when name
// is (again) a live member.
func (s *Sessions) revoke(ctx context.Context, name string, abortIfBack bool) error {
	for {
		s.pmu.Lock()
		p := s.peerLocked(name)
		if abortIfBack && p.alive {
			s.pmu.Unlock()
			return errPeerBack
		}
		now := time.Now()
		if !now.Before(p.grantedUntil) {
			p.grantGen++
			s.pmu.Unlock()
			return nil
		}
		wait := p.grantedUntil.Sub(now)
		changed := s.pmu.changed
		s.pmu.Unlock()
		if !pause(ctx, changed, wait) {
			return context.Cause(ctx)
		}
	}
}

// pick chooses a secondary for key: a live peer outside this node's
// replication group if there is one, else any live peer; among those the
// one holding the fewest secondary copies; ties broken by a hash of the
// key, so that concurrent creators spread out.
func (s *Sessions) pick(key string, exclude map[string]bool) string {
	group := s.cluster.LocalMember().Group
	s.pmu.Lock()
	defer s.pmu.Unlock()
	var best *peer
	var bestOut bool
	var bestHash uint32
	for _, p := range s.pmu.peers {
		if !p.alive || exclude[p.name] || p.name == s.self {
			continue
		}
		out := group == "" || p.group != group
		h := fnv.New32a()
		h.Write([]byte(key))
		h.Write([]byte(p.name))
		ph := h.Sum32()
		switch {
		case best == nil:
		case out != bestOut:
			if !out {
				continue
			}
		case p.count+p.pending != best.count+best.pending:
			if p.count+p.pending > best.count+best.pending {
				continue
			}
		case cmp.Compare(ph, bestHash) >= 0:
			continue
		}
		best, bestOut, bestHash = p, out, ph
	}
	if best == nil {
		return ""
	}
	best.pending++
	return best.name
}

// down reports whether name is a peer that was alive and went down
// (failed, left, or stopped its sessions), and whether it failed.
func (s *Sessions) down(name string) (down, failed bool) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	p := s.pmu.peers[name]
	if p == nil || p.alive || p.downAt.IsZero() {
		return false, false
	}
	return true, p.failed
}

// quorum reports whether this node sees at least half of the session
// nodes that were alive within the last QuorumWindow, itself included.
// Nodes that left are not counted; nodes that failed are, for the
// window. Only then does it take over the sessions of failed peers.
func (s *Sessions) quorum() bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	live, base := 1, 1
	for _, p := range s.pmu.peers {
		switch {
		case p.alive:
			live++
			base++
		case p.failed && time.Since(p.downAt) < s.opts.QuorumWindow:
			base++
		}
	}
	return quorum.Holds(live, base)
}

// gone reports whether name's sessions are certainly not served any
// more: membership says it is not alive, or its session port refuses
// connections (the process or its Sessions stopped; a paused process or
// a network cut does not refuse). A peer that is merely unreachable is
// not gone: it may be serving on the other side of a cut.
func (s *Sessions) gone(ctx context.Context, name string) bool {
	addr, ok := s.addrOf(name)
	if !ok {
		return true
	}
	for range 3 { // a pooled connection may die first; the next call dials
		_, err := s.tr.Call(ctx, addr, methodPing, nil)
		switch {
		case err == nil:
			return false
		case errors.Is(err, syscall.ECONNREFUSED):
			return true
		case !errors.Is(err, transport.ErrPeerUnreachable):
			return false
		}
	}
	return false
}

// hasCandidate reports whether some peer could be a secondary.
func (s *Sessions) hasCandidate() bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, p := range s.pmu.peers {
		if p.alive {
			return true
		}
	}
	return false
}

// unpick ends a pick's reservation.
func (s *Sessions) unpick(name string) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if p := s.pmu.peers[name]; p != nil && p.pending > 0 {
		p.pending--
	}
}

// ---- calls ----

// callCtx bounds ctx by CallTimeout when it has no deadline.
func (s *Sessions) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.CallTimeout)
}

// reqBufs holds *[]byte buffers for encoding requests; those that grew
// past maxPooledReq (full copies of large sessions) are left to the GC.
var reqBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1<<10); return &b }}

const maxPooledReq = 64 << 10

// errPeerGone is returned by call for a peer that is not a live member
// with a session transport.
var errPeerGone = errors.New("replication: peer not available")

// call sends a request to a peer and decodes its answer into resp. It
// returns the time the request was sent, for leases.
func (s *Sessions) call(ctx context.Context, name, method string, req, resp any) (time.Time, error) {
	addr, ok := s.addrOf(name)
	if !ok {
		return time.Time{}, fmt.Errorf("%w: %s", errPeerGone, name)
	}
	// The transport does not keep the body after Call returns: encode it
	// into a pooled buffer.
	bp := reqBufs.Get().(*[]byte)
	body, err := wire.Append((*bp)[:0], req)
	defer func() {
		if cap(body) <= maxPooledReq {
			*bp = body
			reqBufs.Put(bp)
		}
	}()
	if err != nil {
		return time.Time{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.CallTimeout)
		defer cancel()
	}
	sent := time.Now()
	out, err := s.tr.Call(ctx, addr, method, body)
	if err != nil {
		return sent, err
	}
	if resp != nil {
		if err := wire.Unmarshal(out, resp); err != nil {
			return sent, fmt.Errorf("replication: %s from %s: %w", method, name, err)
		}
	}
	return sent, nil
}

// apply sends an apply request and records the lease in its reply.
func (s *Sessions) apply(ctx context.Context, name string, req *applyReq) (reply, error) {
	var r reply
	sent, err := s.call(ctx, name, methodApply, req, &r)
	if err != nil {
		return r, err
	}
	s.noteReply(name, sent, r.G, r.N)
	return r, nil
}

// fullCopy builds the apply request that copies st whole.
func (s *Sessions) fullCopy(key string, st *state) *applyReq {
	s.stats.fullCopies.Add(1)
	return &applyReq{
		From: s.self, Inc: s.inc, Key: key, Epoch: st.epoch, Members: st.members,
		Version: st.version, Full: true, Set: st.attrs.toMap(), Contested: st.contested,
	}
}

// ---- membership events ----

func (s *Sessions) eventLoop() {
	for ev := range s.sub.Events() {
		if ev.Member.Name == s.self {
			continue
		}
		switch ev.Type {
		case membership.EventJoin, membership.EventUpdate:
			s.peerUp(ev.Member)
		case membership.EventLeave, membership.EventFail:
			s.peerDown(ev.Member.Name, ev.Type == membership.EventFail)
		}
	}
}

func (s *Sessions) peerUp(m membership.Member) {
	addr := m.Tag(TagKey)
	s.pmu.Lock()
	p := s.peerLocked(m.Name)
	was, wasAddr := p.alive, p.addr
	p.group = m.Group
	p.addr = addr
	p.alive = addr != ""
	if was && !p.alive {
		p.downAt, p.failed = time.Now(), false
	}
	if p.alive && addr != wasAddr {
		// A new incarnation: what the old one reported does not hold.
		p.leaseUntil, p.gen, p.count = time.Time{}, 0, 0
	}
	if p.alive {
		if other, ok := s.pmu.byID[p.id]; ok && other != p.name {
			s.log.Warn("two nodes share a session node id; rename one", "id", p.id, "a", other, "b", p.name)
			if other < p.name {
				goto done
			}
		}
		s.pmu.byID[p.id] = p.name
	} else if s.pmu.byID[p.id] == p.name {
		delete(s.pmu.byID, p.id)
	}
done:
	s.changedLocked()
	s.pmu.Unlock()
	switch {
	case was && !p.alive:
		// Its sessions stopped (Leave or Shutdown), the member stays.
		s.goFailover(m.Name, false)
	case !was && p.alive:
		s.wake() // repairs: sessions without a secondary, contested copies
	}
}

func (s *Sessions) peerDown(name string, failed bool) {
	s.pmu.Lock()
	p := s.peerLocked(name)
	was := p.alive
	p.alive = false
	p.downAt = time.Now()
	p.failed = failed
	if s.pmu.byID[p.id] == name {
		delete(s.pmu.byID, p.id)
	}
	s.changedLocked()
	s.pmu.Unlock()
	if was {
		s.goFailover(name, failed)
	}
}

func (s *Sessions) goFailover(name string, failed bool) {
	s.spawn(func() { s.failover(name, failed) })
}

// spawn runs f on a goroutine that Shutdown waits for, unless Shutdown
// has begun: then f does not run. Request paths use it, so that no
// goroutine starts after Shutdown's Wait.
func (s *Sessions) spawn(f func()) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mu.closed {
		return
	}
	s.wg.Go(f)
}

func (s *Sessions) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// ---- janitor ----

// janitor expires idle copies, tells secondaries which sessions were
// used, gives a secondary to sessions that lack one, resolves copies
// contested with peers that came back, and forgets old tombstones and
// peers.
func (s *Sessions) janitor() {
	tick := s.opts.tick()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.kick:
		case <-s.ctx.Done():
			return
		}
		s.sweep(tick)
	}
}

func (s *Sessions) sweep(tick time.Duration) {
	now := s.now()
	idle := int64(s.opts.IdleTimeout)
	grace := int64(2 * tick)
	touches := map[string][]string{}
	contested := map[string][]*entry{}
	confirms := map[string][]*entry{}
	confirmAge := int64(4 * tick)
	var repairs, moves []*entry
	for _, e := range s.entries() {
		st := e.state()
		age := now - e.last.Load()
		switch st.role {
		case rolePrimary:
			if age > idle {
				s.expire(e, st)
				continue
			}
			if st.secondary != "" && e.used.Swap(false) {
				touches[st.secondary] = append(touches[st.secondary], e.key)
			}
			if st.secondary == "" {
				repairs = append(repairs, e)
			} else if down, _ := s.down(st.secondary); down {
				moves = append(moves, e)
			}
			for _, n := range s.contestedLive(st.contested) {
				contested[n] = append(contested[n], e)
			}
		case roleSecondary:
			if age > idle+grace {
				s.dropIf(e, st, "secondary expired")
				s.stats.expired.Add(1)
				continue
			}
			if down, _ := s.down(st.primary); down {
				moves = append(moves, e)
			} else if now-e.confirmed.Load() > confirmAge && s.isAlive(st.primary) {
				confirms[st.primary] = append(confirms[st.primary], e)
			}
		}
	}
	s.tomb.sweep(time.Now())
	s.moved.sweep(time.Now())
	s.prunePeers()
	for name, keys := range touches {
		s.wg.Go(func() { s.sendTouch(name, keys) })
	}
	if len(repairs) > 0 {
		s.wg.Go(func() { s.repair(repairs) })
	}
	if len(moves) > 0 && s.quorum() {
		// Failovers that an event started without quorum, or missed.
		s.wg.Go(func() { s.move(moves) })
	}
	for name, list := range contested {
		s.wg.Go(func() { s.resolveWith(name, list) })
	}
	for name, list := range confirms {
		s.wg.Go(func() { s.confirmWith(name, list) })
	}
}

// expire drops an idle primary copy and tells its secondary.
func (s *Sessions) expire(e *entry, st state) {
	select {
	case e.wl <- struct{}{}: // busy sessions are not idle; try next tick
	default:
		return
	}
	defer e.unlock()
	if e.state().role != rolePrimary || s.now()-e.last.Load() <= int64(s.opts.IdleTimeout) {
		return
	}
	s.drop(e, "primary expired")
	s.stats.expired.Add(1)
	if st.secondary != "" {
		s.wg.Go(func() { s.sendDrop(st.secondary, e.key, st.rank(), false) })
	}
}

// confirmWith asks a primary whether our secondary copies of its
// sessions are current, and drops those it has moved on from: copies
// left behind when a takeover's answer was lost or a drop did not arrive.
func (s *Sessions) confirmWith(name string, list []*entry) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	defer cancel()
	req := confirmReq{From: s.self, Items: make([]rankWire, len(list))}
	states := make([]state, len(list))
	for i, e := range list {
		states[i] = e.state()
		req.Items[i] = rankWire{Key: e.key, Epoch: states[i].epoch}
	}
	var r confirmReply
	if _, err := s.call(ctx, name, methodConfirm, req, &r); err != nil || len(r.St) != len(list) {
		s.log.Debug("confirm failed", "peer", name, "err", err)
		return
	}
	now := s.now()
	for i, e := range list {
		st := states[i]
		switch r.St[i] {
		case stOK:
			e.confirmed.Store(now)
			continue
		case stUnknown:
			if st.primaryInc != r.I || st.pending {
				// Made by an earlier incarnation, or kept for a new
				// primary that never installed it: ours may be the only
				// copy left; a request with an old route finds it.
				continue
			}
		case stGone:
			s.tomb.add(e.key, s.tombTTL())
		case stStale:
		default:
			continue
		}
		// Drop only if nothing changed meanwhile.
		if s.dropIf(e, st, "confirm: orphan, answer "+r.St[i].String()) {
			s.movedTo(e.key, name)
		}
	}
}

func (s *Sessions) sendTouch(name string, keys []string) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	defer cancel()
	var r reply
	sent, err := s.call(ctx, name, methodTouch, touchReq{From: s.self, Keys: keys}, &r)
	if err != nil {
		s.log.Debug("touch failed", "peer", name, "err", err)
		return
	}
	s.noteReply(name, sent, r.G, r.N)
}

func (s *Sessions) sendDrop(name, key string, rk rank, gone bool) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	defer cancel()
	req := dropReq{From: s.self, Key: key, Epoch: rk.epoch, Members: rk.members, Primary: rk.primary, Gone: gone}
	if _, err := s.call(ctx, name, methodDrop, req, nil); err != nil {
		s.log.Debug("drop not delivered", "peer", name, "err", err)
	}
}

// prunePeers forgets peers that have been gone for long: the map of
// peers stays bounded by the members seen recently.
func (s *Sessions) prunePeers() {
	keep := max(s.opts.IdleTimeout, 10*time.Minute)
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for name, p := range s.pmu.peers {
		if !p.alive && !p.downAt.IsZero() && time.Since(p.downAt) > keep {
			delete(s.pmu.peers, name)
		}
	}
}
