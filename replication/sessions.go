package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/internal/histogram"
	"github.com/troupe-go/troupe/membership"
)

// This file holds the Sessions type, its lifecycle and its public API.
// The rest of the package, by file: table.go the copies this node holds;
// peers.go the other nodes, placement and quorum; lease.go when a copy
// may be served or taken over; takeover.go a Get on a node that is not
// the primary; client.go and server.go the two sides of the protocol,
// whose messages are in protocol.go and codec.go; groupcommit.go and
// async.go how changes travel in ModeSync and ModeAsync; janitor.go and
// failover.go the background work; http.go the net/http middleware.
//
// Locks, in the order they may be taken (holding one, take only those
// below it):
//
//  1. The middleware's per-request mu (http.go), held across RenewID
//     and Destroy (bounded by the request's context, or CallTimeout);
//     then a Session handle's cmu, held across the Save that creates
//     its session and across RenewID; then its mu, held while it
//     resolves node ids (pmu).
//  2. An entry's write lock (lock and unlock in table.go): it
//     serializes everything that changes one session. Its bookkeeping
//     takes the entry's mu for a moment, like any reader of the state.
//  3. async: the tables of group-commit and async queues; held while
//     taking mu to start a queue's goroutine.
//  4. At most one of: mu (the table of entries), pmu (the peers), an
//     entry's mu, a group queue's mu, a keyTable's mu. Each is held only
//     to read or replace what it guards: never across I/O, a wait, or a
//     call into membership.
//
// The write lock is the one lock held across calls to peers, so that one
// session's changes reach its secondary one at a time and in version
// order, and so that what an answer decides (the new version, the new
// route, a stale copy dropped) applies to the state that was sent. Save
// (an apply, a full copy after a gap), the lease check (check: a verify,
// resolves), a takeover (install, promoteLocal), the failover (promote,
// rehome: up to maxPlacementTries candidates) and, serving a peer's
// take, check and handOver hold it across their calls; before taking a
// session from a primary that may still serve it, they hold it for the
// rest of the lease this node granted that primary too (revoke: at most
// LeaseTerm). The caller's ctx bounds it, or CallTimeout when the caller
// gave no deadline, for background work and for a peer's request; in
// ModeAsync a Save also holds it while the queue to its secondary is
// full, within its ctx. Two nodes may each hold a session's write lock
// while calling the other (two takeovers racing): so a peer's request
// waits for it at most handlerWait (LeaseTerm/2) and then answers busy,
// and one served on the transport's reader goroutine (TryHandleCall)
// only tries it.

// Sessions is this node's share of the cluster's replicated sessions: the
// sessions it serves as primary and the copies it keeps as secondary for
// other nodes. Create it with NewSessions and stop it with Shutdown or
// Leave. All methods are safe for concurrent use.
type Sessions struct {
	cluster *membership.Cluster
	opts    Options
	log     *slog.Logger
	hops    hopWatch            // takeovers from live nodes, for the routing warning
	ch      *membership.Channel // channelName: calls to peers, and theirs to us
	self    string              // node name
	selfID  string              // NodeID(self)
	inc     uint64              // incarnation: random, tells a restarted peer from the one before
	start   time.Time

	ctx       context.Context // ends at Shutdown
	cancel    context.CancelFunc
	deadlines deadlines      // CallTimeout for calls made without a deadline
	wg        sync.WaitGroup // every goroutine of Sessions, and HandleCall's
	sub       *membership.Subscription
	kick      chan struct{} // wakes the janitor early

	tomb     keyTable // invalidated keys
	moved    keyTable // key -> the node a session moved to
	nPrimary atomic.Int64
	nSecond  atomic.Int64
	creating atomic.Int64 // Creates under way, for MaxSessions
	stats    counters
	saveLat  *histogram.Histogram // Stats.SaveLatency

	// Lock order: see the top of this file.
	mu struct {
		sync.RWMutex
		closed  bool
		entries map[string]*entry
		taking  map[string]chan struct{} // keys being acquired from peers
	}
	pmu struct {
		sync.Mutex
		peers   map[string]*peer
		byID    map[string]string // NodeID -> name, live peers holding sessions
		changed chan struct{}     // closed and replaced on every peer change
	}
	async struct {
		sync.Mutex
		queues map[string]*asyncQueue // ModeAsync: changes waiting for each secondary
		groups map[string]*groupQueue // ModeSync: group commit per secondary
	}
}

type counters struct {
	created, saves, fullCopies, takeovers, promotions, rehomes, expired, invalidated, staleDrops, refused atomic.Uint64
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
	// Refused counts peers' requests refused: from a node that is not a
	// live member holding sessions, naming another sender, or making a
	// session larger than MaxSessionSize.
	Refused uint64
	// SaveLatency is how long Save calls took, successful or not (those
	// on a session of another Sessions, or after Shutdown, excepted).
	SaveLatency Histogram
}

// Histogram is a snapshot of a latency histogram: Counts[i] counts the
// durations in (Bounds[i-1], Bounds[i]], the last element of Counts those
// over every bound (not cumulative); Count() is their total, Sum the
// durations' total.
type Histogram = histogram.Snapshot

// saveLatencyBounds are the buckets of Stats.SaveLatency: 100 µs to
// about 3.3 s, doubling.
var saveLatencyBounds = histogram.Exponential(100*time.Microsecond, 2, 16)

// NewSessions starts this node's session store on cluster: it registers
// the sessions channel on the cluster's transport, marks the local member
// as holding sessions (the member tag TagKey), and follows membership
// events to fail over. ctx bounds only the start.
//
// A full copy of a session travels in one message: the cluster's
// membership.Config.MaxMessageSize must be at least
// opts.MinMessageSize() (it is with the defaults).
func NewSessions(ctx context.Context, cluster *membership.Cluster, opts Options) (*Sessions, error) {
	if cluster == nil {
		return nil, fmt.Errorf("%w: nil cluster", ErrInvalidOptions)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if !cluster.Secure() && !o.Insecure {
		return nil, fmt.Errorf("%w: the cluster has no keys, so sessions would travel in plaintext and anyone who can reach "+
			"this node could read, forge or drop them; set membership.Config.SecretKeys on every node (make a key with: "+
			"head -c 32 /dev/urandom | base64), or set Options.Insecure for a test on one host", ErrInvalidOptions)
	}
	if max := cluster.MaxMessageSize(); max < o.MinMessageSize() {
		return nil, fmt.Errorf("%w: MaxSessionSize %d needs the cluster's MaxMessageSize to be at least %d, it is %d",
			ErrInvalidOptions, o.MaxSessionSize, o.MinMessageSize(), max)
	}
	s := &Sessions{
		cluster: cluster,
		opts:    o,
		self:    cluster.Name(),
		selfID:  NodeID(cluster.Name()),
		start:   time.Now(),
		kick:    make(chan struct{}, 1),
		inc:     rand.Uint64() | 1,
		saveLat: histogram.New(saveLatencyBounds),
	}
	s.log = o.Logger.With("node", s.self)
	s.mu.entries = map[string]*entry{}
	s.mu.taking = map[string]chan struct{}{}
	s.pmu.peers = map[string]*peer{}
	s.pmu.byID = map[string]string{}
	s.pmu.changed = make(chan struct{})
	s.async.queues = map[string]*asyncQueue{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.deadlines.parent, s.deadlines.timeout = s.ctx, s.opts.CallTimeout

	ch, err := cluster.Channel(channelName, server{s}, membership.WithErrors(callErrors...))
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("replication: register channel %q: %w", channelName, err)
	}
	s.ch = ch
	s.sub = cluster.Subscribe()
	err = cluster.UpdateMeta(ctx, func(m *membership.Meta) {
		if m.Tags == nil {
			m.Tags = map[string]string{}
		}
		m.Tags[TagKey] = strconv.FormatUint(s.inc, 16)
	})
	if err != nil {
		s.cancel()
		s.sub.Close()
		ch.Close()
		return nil, fmt.Errorf("replication: publish member tag: %w", err)
	}
	// The peers membership knows now, before NewSessions returns: a Get
	// on a node that has just started (or restarted under its old name)
	// must find the sessions that exist, not answer "not found" until the
	// event loop catches up. The subscription's first events repeat them.
	for _, m := range cluster.Members() {
		if m.Name != s.self {
			s.peerUp(m)
		}
	}
	s.wg.Go(s.eventLoop)
	s.wg.Go(s.janitor)
	if !cluster.Secure() {
		s.log.Warn("sessions run without cluster keys (Options.Insecure): anyone who can reach this node can read, forge or drop sessions")
	}
	s.log.Info("sessions started", "id", s.selfID, "mode", o.Mode)
	return s, nil
}

// NodeID returns this node's id in session routes.
func (s *Sessions) NodeID() string { return s.selfID }

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

// WaitPeers waits until this node sees at least n other nodes that hold
// sessions, any of which can be a secondary, and returns nil at once if
// it already does. Call it after NewSessions instead of polling Peers: a
// session created before any peer is seen has no secondary until the
// janitor adds one. It returns the context's cause when ctx ends first,
// and ErrClosed after Shutdown.
func (s *Sessions) WaitPeers(ctx context.Context, n int) error {
	if s.isClosed() {
		return ErrClosed
	}
	for {
		s.pmu.Lock()
		live := s.liveLocked() - 1
		changed := s.pmu.changed
		s.pmu.Unlock()
		if live >= n {
			return nil
		}
		select {
		case <-changed:
		case <-s.ctx.Done():
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("replication: waiting for %d peers, %d seen: %w", n, live, context.Cause(ctx))
		}
	}
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
		Refused:     c.refused.Load(),
		SaveLatency: s.saveLat.Snapshot(),
	}
}

const (
	maxGetRounds      = 8
	maxPlacementTries = 3
	minBackoff        = 10 * time.Millisecond
	maxBackoff        = 500 * time.Millisecond
)

// callCtx bounds ctx by CallTimeout when it has no deadline.
func (s *Sessions) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return s.deadlines.bound(ctx)
}

// Create starts a new, empty session with this node as its primary and
// a secondary chosen by the placement rule, and returns its handle. The
// secondary receives the empty session before Create returns (in both
// modes), so the route in its ID is real at once. With no other node
// holding sessions the route says "none" for the secondary; one is added
// when a node joins.
//
// Errors: ErrTooManySessions (which wraps ErrUnavailable too) when this
// node already serves Options.MaxSessions sessions; ErrUnavailable;
// ErrClosed.
func (s *Sessions) Create(ctx context.Context) (*Session, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	e, st, err := s.create(ctx, nil)
	if err != nil {
		return nil, err
	}
	return newHandle(s, e, st), nil
}

// create makes a session with the attributes set (none: an empty one)
// and gives it a secondary.
func (s *Sessions) create(ctx context.Context, set attrs) (*entry, state, error) {
	if !s.reserve() {
		return nil, state{}, fmt.Errorf("%w: %w: this node serves %d sessions (Options.MaxSessions)",
			ErrTooManySessions, ErrUnavailable, s.opts.MaxSessions)
	}
	defer s.creating.Add(-1)
	e := newEntry(newKey(), s.now())
	_ = e.lock(ctx) // a new entry: never waits
	defer e.unlock()
	st := state{
		role:    rolePrimary,
		epoch:   1,
		members: s.liveCount(),
		primary: s.self,
	}
	if len(set) > 0 {
		st.attrs = attrs(nil).with(set, nil)
		st.size = st.attrs.size()
		if limit := s.opts.MaxSessionSize; st.size > limit {
			return nil, state{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, st.size, limit)
		}
		st.version, st.sent = 1, 1
	}
	if err := s.placeSecondary(ctx, e.key, &st, nil); err != nil {
		return nil, state{}, unavailable("create", err)
	}
	if len(set) > 0 && s.opts.Mode == ModeSync {
		if err := s.acknowledgeable(e.key, st.secondary); err != nil {
			return nil, state{}, err
		}
	}
	s.publish(e, st)
	if _, err := s.insert(e); err != nil {
		return nil, state{}, err
	}
	s.stats.created.Add(1)
	if len(set) > 0 {
		s.stats.saves.Add(1)
	}
	return e, st, nil
}

// reserve counts a Create under way, unless this node serves
// Options.MaxSessions sessions already (those under way included).
func (s *Sessions) reserve() bool {
	limit := int64(s.opts.MaxSessions)
	for {
		n := s.creating.Load()
		if limit >= 0 && s.nPrimary.Load()+n >= limit {
			return false
		}
		if s.creating.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Get returns a handle on the session with the given routed id.
//
// If this node is the session's primary, Get serves its copy, after
// asking the secondary when the lease has run out (see the package
// documentation). Otherwise this node takes the session over: it asks the
// route's primary, or if that fails its secondary, to hand the session
// over, becomes its primary, gives it a secondary, and returns it with
// the new route (see Session.ID). The same happens when this node holds
// the secondary copy: then its own copy is used if neither peer can hand
// the session over.
//
// Errors: ErrInvalidID for a malformed id; ErrNotFound when no node holds
// the session; ErrUnavailable when the nodes that may hold it cannot be
// reached before ctx ends (with no deadline, Options.CallTimeout bounds
// the call); ErrClosed after Shutdown. The nodes that may hold it include
// those seen failed within QuorumWindow, which may be back or across a
// cut: before "not found", each is asked for at most LeaseTerm (a port
// that refuses means no copy), so an unknown id asked while a peer is cut
// off gets ErrUnavailable, not ErrNotFound.
func (s *Sessions) Get(ctx context.Context, id string) (*Session, error) {
	rid, err := ParseID(id)
	if err != nil {
		return nil, err
	}
	return s.get(ctx, rid)
}

func (s *Sessions) get(ctx context.Context, rid ID) (*Session, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	// The common case, a primary with a fresh lease, asks nobody: it
	// needs no deadline either.
	if e := s.lookup(rid.Key); e != nil {
		if st := e.state(); st.role == rolePrimary && s.settled(st, true) {
			s.touch(e)
			return newHandle(s, e, st), nil
		}
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	var hint []string
	backoff := minBackoff
	for round := range maxGetRounds {
		if round > 0 {
			// Another node is moving the session right now: give it a
			// moment.
			// Jitter, so that nodes racing for one session do not retry
			// in step.
			t := time.NewTimer(backoff/2 + rand.N(backoff))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, unavailable("get session "+keyRef(rid.Key).String(), context.Cause(ctx))
			}
			backoff = min(2*backoff, maxBackoff)
		}
		e := s.lookup(rid.Key)
		if e == nil {
			if s.tomb.has(rid.Key) {
				return nil, fmt.Errorf("%w: session %s was invalidated", ErrNotFound, keyRef(rid.Key))
			}
			h, err := s.acquire(ctx, rid, nil, hint)
			if errors.Is(err, errRetry) || errors.Is(err, errBusy) {
				continue
			}
			return h, err
		}
		st := e.state()
		switch st.role {
		case rolePrimary:
			st, err := s.check(ctx, e, true, true)
			if err == nil {
				s.touch(e)
				return newHandle(s, e, st), nil
			}
			if d, ok := errors.AsType[*droppedError](err); ok {
				if d.winner != "" {
					hint = append(hint, d.winner)
				}
				continue
			}
			if errors.Is(err, errGoneCopy) {
				return nil, fmt.Errorf("%w: session %s was invalidated", ErrNotFound, keyRef(rid.Key))
			}
			return nil, err
		case roleSecondary:
			h, err := s.acquire(ctx, rid, e, hint)
			if errors.Is(err, errRetry) || errors.Is(err, errBusy) {
				continue
			}
			return h, err
		default:
			// Being installed by an acquisition, or dropped just now.
			h, err := s.acquire(ctx, rid, nil, hint)
			if errors.Is(err, errRetry) || errors.Is(err, errBusy) {
				continue
			}
			return h, err
		}
	}
	return nil, fmt.Errorf("%w: session %s keeps moving, or its holders cannot vouch for it now", ErrUnavailable, keyRef(rid.Key))
}

// Save applies the handle's changes to the session and replicates them:
// only the attributes set or deleted through this handle travel, with the
// session's next version. In ModeSync Save returns once the secondary has
// applied them; in ModeAsync once they are queued for it. A handle with
// no changes only marks the session used. On success the handle shows the
// saved state and the current route.
//
// While the secondary is unreachable, Save waits for it, or for
// membership to declare it failed and the failover to give the session a
// new secondary, until ctx ends (with no deadline, Options.CallTimeout).
// A secondary whose port refuses the connection, or whose sessions are
// shut down, is not waited for: Save gives the session a new secondary
// at once and saves there.
//
// A handle whose session does not exist yet (FromRequest's, or one
// after RenewID) is saved by creating its session with its attributes,
// as Create does; if it has none, Save does nothing.
//
// Errors: ErrStale when this node no longer serves the session (nothing
// was saved: Get it again); ErrTooLarge; ErrTooManySessions when a new
// session would be one too many (see Create); ErrUnavailable when, in
// ModeSync, the change could not be acknowledged in time (it may or may
// not have reached the secondary, and is not visible on the primary; Save
// again), or when, in ModeAsync, the queue for the secondary stayed full
// until ctx ended (the change is saved on the primary, and reaches the
// secondary with a full copy at the next Save); ErrClosed.
func (s *Sessions) Save(ctx context.Context, h *Session) error {
	if h == nil || h.s != s {
		return errors.New("replication: Save of a session that this Sessions did not return")
	}
	if s.isClosed() {
		return ErrClosed
	}
	defer s.saveLat.ObserveSince(time.Now())
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	e := h.entry()
	if e == nil {
		return s.saveNew(ctx, h)
	}
	set, del := h.changes()
	if _, err := s.check(ctx, e, false, true); err != nil {
		return staleOr(err)
	}
	backoff := minBackoff
	for {
		if err := e.lock(ctx); err != nil {
			return unavailable("session busy", err)
		}
		changes := s.changes()
		st, err, retry := s.saveLocked(ctx, e, set, del)
		replaced := retry && !errors.Is(err, errBusy) && s.replaceDead(ctx, e)
		e.unlock()
		if err == nil {
			h.saved(st, set, del)
			return nil
		}
		if !retry {
			return err
		}
		if replaced {
			continue // to the new secondary, at once
		}
		if !pause(ctx, changes, backoff) {
			return unavailable("secondary "+st.secondary+" did not acknowledge", err)
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// mayAcknowledge checks, under e's write lock, that a Save in ModeSync
// may be acknowledged (see acknowledgeable), placing a secondary first if
// the session has none.
func (s *Sessions) mayAcknowledge(ctx context.Context, e *entry) error {
	if e.state().secondary == "" && !s.opts.PrimaryOnlyWrites && s.hasCandidate() {
		s.rehomeLocked(ctx, e, "", false)
	}
	return s.acknowledgeable(e.key, e.state().secondary)
}

// acknowledgeable reports why a change to session key, whose secondary
// is secondary, may not be acknowledged in ModeSync: this node does not
// hold the quorum (on the minority side of a partition a write could be
// lost at the heal), or the session has no secondary, unless no other
// session node was seen within QuorumWindow or Options.PrimaryOnlyWrites
// says that the primary's copy alone will do.
func (s *Sessions) acknowledgeable(key, secondary string) error {
	if !s.quorum() {
		return fmt.Errorf("%w: session %s: this node does not see a majority of the session nodes, so a write here could be lost when the cluster heals",
			ErrUnavailable, keyRef(key))
	}
	if secondary != "" || s.opts.PrimaryOnlyWrites || s.alone() {
		return nil
	}
	return fmt.Errorf("%w: session %s has no secondary and no node took a copy, so the change would live on this node only (Options.PrimaryOnlyWrites accepts that)",
		ErrUnavailable, keyRef(key))
}

// saveNew saves a handle whose session does not exist yet: it creates
// the session with the handle's attributes, or does nothing if it has
// none.
func (s *Sessions) saveNew(ctx context.Context, h *Session) error {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	if h.entry() != nil {
		return s.Save(ctx, h) // created meanwhile
	}
	set, del := h.changes()
	if len(set) == 0 {
		return nil
	}
	e, st, err := s.create(ctx, set)
	if err != nil {
		return err
	}
	h.bind(e, st, set, del)
	return nil
}

// RenewID gives the session of h a new id, as a login must (against
// session fixation: an id a client was given, or made someone use,
// before logging in must not name the logged-in session). It invalidates
// the session under its old id everywhere at once, and makes h new again
// with every attribute as a change: the next Save of h creates a session
// under a new key with them, and h.ID() returns the new id from then on
// (it is "" until then). A handle whose session does not exist yet has
// nothing to renew.
//
// Errors: those of Invalidate. With ErrUnavailable the old id no longer
// works on this node but a node that may hold a copy could not be told;
// h is made new all the same.
func (s *Sessions) RenewID(ctx context.Context, h *Session) error {
	return s.unmake(ctx, h, true)
}

// unmake invalidates h's session and makes h new again, with its
// attributes (keep) or empty.
func (s *Sessions) unmake(ctx context.Context, h *Session, keep bool) error {
	if h == nil || h.s != s {
		return errors.New("replication: a session that this Sessions did not return")
	}
	h.cmu.Lock()
	defer h.cmu.Unlock()
	id := h.ID()
	if id == "" {
		if !keep {
			h.detach(false)
		}
		return nil
	}
	err := s.Invalidate(ctx, id)
	if err != nil && !errors.Is(err, ErrUnavailable) {
		return err
	}
	h.detach(keep)
	return err
}

func staleOr(err error) error {
	if _, ok := errors.AsType[*droppedError](err); ok || errors.Is(err, errGoneCopy) {
		return fmt.Errorf("%w: %w", ErrStale, err)
	}
	return err
}

func (s *Sessions) saveLocked(ctx context.Context, e *entry, set attrs, del []string) (st state, err error, retry bool) {
	st = e.state()
	if st.role != rolePrimary {
		return st, fmt.Errorf("%w: this node no longer serves session %s", ErrStale, keyRef(e.key)), false
	}
	s.touch(e)
	if len(set)+len(del) == 0 {
		return st, nil, false
	}
	if s.opts.Mode == ModeSync {
		if err := s.mayAcknowledge(ctx, e); err != nil {
			return st, err, false
		}
		st = e.state()
	}
	next := st
	next.attrs = st.attrs.with(set, del)
	next.size = next.attrs.size()
	if limit := s.opts.MaxSessionSize; next.size > limit {
		return st, fmt.Errorf("%w: %d bytes after the changes, limit %d", ErrTooLarge, next.size, limit), false
	}
	next.version = max(st.version, st.sent) + 1
	next.sent = next.version
	stale := func() error { return fmt.Errorf("%w: session %s was dropped during Save", ErrStale, keyRef(e.key)) }
	if st.secondary == "" {
		if !s.publish(e, next) {
			return st, stale(), false
		}
		s.stats.saves.Add(1)
		return next, nil, false
	}
	req := &applyReq{
		From: s.self, Inc: s.inc, Key: e.key, Epoch: st.epoch, Members: st.members,
		Base: st.version, Version: next.version, Set: set, Del: del,
	}
	if s.opts.Mode == ModeAsync {
		if !s.publish(e, next) {
			return st, stale(), false
		}
		s.stats.saves.Add(1)
		// Under the write lock, so that changes queue in version order.
		if err := s.enqueue(ctx, st.secondary, e, req); err != nil {
			// Saved here; the secondary will find the gap and ask for
			// a full copy.
			return next, unavailable("queue for "+st.secondary, err), false
		}
		return next, nil, false
	}
	r, err := s.applySync(ctx, st.secondary, req)
	if err == nil && r.St == stGap {
		r, err = s.apply(ctx, st.secondary, s.fullCopy(e.key, &next))
	}
	if err != nil {
		// The secondary may have applied it: remember the version as used.
		sent := st
		sent.sent = next.version
		s.publish(e, sent)
		if ctx.Err() != nil || !retryable(err) {
			return st, unavailable("secondary "+st.secondary+" did not acknowledge", err), false
		}
		return st, err, true
	}
	switch r.St {
	case stOK:
		next.verifiedGen = r.G
		if !s.publish(e, next) {
			return st, stale(), false
		}
		s.stats.saves.Add(1)
		return next, nil, false
	case stBusy:
		return st, errBusy, true
	case stGone:
		s.drop(e, "save: invalidated")
		s.tomb.add(e.key, s.tombTTL())
		return st, fmt.Errorf("%w: session %s was invalidated", ErrStale, keyRef(e.key)), false
	case stTooLarge:
		return st, fmt.Errorf("%w: the secondary %s refused session %s: its MaxSessionSize is smaller than this node's",
			ErrTooLarge, st.secondary, keyRef(e.key)), false
	default:
		s.dropStale(e, st)
		return st, fmt.Errorf("%w: another node holds a newer copy of session %s", ErrStale, keyRef(e.key)), false
	}
}

// Invalidate ends a session everywhere: this node's copy, the copies on
// the nodes its route names and their partners. Handles on it get
// ErrStale from Save, and Get returns ErrNotFound. Invalidating an
// unknown session is not an error. It returns ErrUnavailable if a node
// that may hold a copy could not be told (that copy expires by itself).
func (s *Sessions) Invalidate(ctx context.Context, id string) error {
	rid, err := ParseID(id)
	if err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	s.tomb.add(rid.Key, s.tombTTL())
	notify := map[string]bool{}
	if e := s.lookup(rid.Key); e != nil {
		st := e.state()
		s.drop(e, "invalidate")
		s.stats.invalidated.Add(1)
		switch st.role {
		case rolePrimary:
			notify[st.secondary] = true
		case roleSecondary:
			notify[st.primary] = true
		}
	}
	for _, nid := range []string{rid.Primary, rid.Secondary} {
		if n, ok := s.nameOf(nid); ok {
			notify[n] = true
		}
	}
	delete(notify, "")
	delete(notify, s.self)
	var errs []error
	for n := range notify {
		_, err := s.call(ctx, n, methodInvalidate, invalidateReq{From: s.self, Key: rid.Key}, nil)
		if err != nil && !errors.Is(err, errPeerGone) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return unavailable("invalidation not confirmed by every node", errors.Join(errs...))
	}
	return nil
}

// Leave removes the tag TagKey from this node's member, so
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
// disappears; a peer that asks for a session meanwhile finds this node's
// sessions stopped and promotes its copy. Calls in flight fail with
// ErrClosed or ErrUnavailable. It closes the sessions channel, waits for
// every goroutine and every request from a peer under way to return, and
// is safe to call twice. It does not shut the cluster down.
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
	s.ch.Close()
	s.wg.Wait()
	s.log.Info("sessions stopped")
}

func (s *Sessions) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.closed
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

// enter counts a request from a peer as a goroutine of Sessions, unless
// Shutdown has begun: then it reports false. The caller calls s.wg.Done
// when the request is served.
func (s *Sessions) enter() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.mu.closed {
		return false
	}
	s.wg.Add(1)
	return true
}
