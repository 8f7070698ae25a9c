package replication

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/troupe-go/troupe/internal/transport"
)

// Internal outcomes, never returned to callers.
var (
	errRetry     = errors.New("replication: retry")
	errStaleCopy = errors.New("replication: a peer holds a newer copy")
	errGoneCopy  = errors.New("replication: session was invalidated")
	errBusy      = errors.New("replication: cannot vouch for this copy now")
)

// droppedError says that check dropped the local copy because a peer
// holds a newer one; winner is that peer, if known.
type droppedError struct{ winner string }

func (e *droppedError) Error() string { return "replication: local copy was stale" }

const (
	maxGetRounds      = 8
	maxPlacementTries = 3
	minBackoff        = 10 * time.Millisecond
	maxBackoff        = 500 * time.Millisecond
)

// retryable reports whether a failed call to a peer may succeed later
// without anything else changing, or after membership notices the peer
// is gone.
func retryable(err error) bool {
	return errors.Is(err, transport.ErrPeerUnreachable) || errors.Is(err, errPeerGone) ||
		errors.Is(err, transport.ErrHandshake)
}

// pause waits before a retry: for d, or until changes is closed (the
// peers changed), or until ctx ends, when it returns false.
func pause(ctx context.Context, changes <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-changes:
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

// tombTTL is how long an invalidated key is remembered: past it, every
// copy left anywhere has expired.
func (s *Sessions) tombTTL() time.Time {
	return time.Now().Add(s.opts.IdleTimeout + 4*s.opts.tick())
}

func (s *Sessions) touch(e *entry) {
	e.last.Store(s.now())
	if !e.used.Load() {
		e.used.Store(true)
	}
}

// Create starts a new, empty session with this node as its primary and
// a secondary chosen by the placement rule, and returns its handle. The
// secondary receives the empty session before Create returns (in both
// modes), so the route in its ID is real at once. With no other node
// holding sessions the route says "none" for the secondary; one is added
// when a node joins.
func (s *Sessions) Create(ctx context.Context) (*Session, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	e := newEntry(newKey(), s.now())
	_ = e.lock(ctx) // a new entry: never waits
	defer e.unlock()
	st := state{
		role:    rolePrimary,
		epoch:   1,
		members: s.liveCount(),
		primary: s.self,
	}
	if err := s.placeSecondary(ctx, e.key, &st, nil); err != nil {
		return nil, unavailable("create", err)
	}
	s.publish(e, st)
	if _, err := s.insert(e); err != nil {
		return nil, err
	}
	s.stats.created.Add(1)
	return newHandle(s, e, st), nil
}

// placeSecondary picks a secondary for st by the placement rule and sends
// it a full copy; it tries up to maxPlacementTries candidates and leaves
// st.secondary empty when none takes the copy. exclude names nodes not to
// use. It returns errStaleCopy or errGoneCopy when a candidate holds a
// newer copy or knows the session was invalidated, and the context's
// error when ctx ends.
func (s *Sessions) placeSecondary(ctx context.Context, key string, st *state, exclude map[string]bool) error {
	tried := map[string]bool{}
	for k, v := range exclude {
		tried[k] = v
	}
	st.secondary = ""
	for range maxPlacementTries {
		name := s.pick(key, tried)
		if name == "" {
			return nil
		}
		tried[name] = true
		r, err := s.apply(ctx, name, s.fullCopy(key, st))
		s.unpick(name)
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			s.log.Debug("secondary candidate refused a copy", "peer", name, "err", err)
			continue
		}
		switch r.St {
		case stOK:
			st.secondary = name
			st.verifiedGen = r.G
			return nil
		case stStale:
			return errStaleCopy
		case stGone:
			return errGoneCopy
		}
	}
	return nil
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
// the call); ErrClosed after Shutdown.
func (s *Sessions) Get(ctx context.Context, id string) (*Session, error) {
	rid, err := ParseID(id)
	if err != nil {
		return nil, err
	}
	if s.isClosed() {
		return nil, ErrClosed
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
				return nil, unavailable("get "+rid.Key, context.Cause(ctx))
			}
			backoff = min(2*backoff, maxBackoff)
		}
		e := s.lookup(rid.Key)
		if e == nil {
			if s.tomb.has(rid.Key) {
				return nil, fmt.Errorf("%w: %s was invalidated", ErrNotFound, rid.Key)
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
				return nil, fmt.Errorf("%w: %s was invalidated", ErrNotFound, rid.Key)
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
	return nil, fmt.Errorf("%w: session %s keeps moving, or its holders cannot vouch for it now", ErrUnavailable, rid.Key)
}

// check makes sure that e, a primary copy, may be served: copies
// contested with peers that are back are resolved with them, and, with
// lease, the secondary confirms the copy when the lease has run out or
// its generation moved. With wait, an unreachable secondary is waited for
// (until it answers, or membership declares it failed and the failover
// gives the session a new secondary, or ctx ends); without, check returns
// errBusy. It returns the state to serve, or a *droppedError when the
// copy turned out stale and was dropped.
func (s *Sessions) check(ctx context.Context, e *entry, lease, wait bool) (state, error) {
	st := e.state()
	if st.role != rolePrimary {
		return st, &droppedError{}
	}
	if len(s.contestedLive(st.contested)) == 0 && (!lease || s.fresh(st)) {
		return st, nil
	}
	backoff := minBackoff
	for {
		lockErr := error(nil)
		if wait {
			lockErr = e.lock(ctx)
		} else {
			lockErr = e.lockWithin(ctx, s.handlerWait())
		}
		if lockErr != nil {
			if !wait {
				return st, errBusy
			}
			return st, unavailable("session busy", lockErr)
		}
		changes := s.changes()
		st, err, unreachable := s.checkLocked(ctx, e, lease)
		e.unlock()
		if !unreachable {
			return st, err
		}
		if !wait {
			return st, errBusy
		}
		if !pause(ctx, changes, backoff) {
			return st, unavailable("secondary "+st.secondary+" unreachable", err)
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// checkLocked is check's work under e's write lock. unreachable reports
// that the secondary could not be asked.
func (s *Sessions) checkLocked(ctx context.Context, e *entry, lease bool) (st state, err error, unreachable bool) {
	st = e.state()
	if st.role != rolePrimary {
		return st, &droppedError{}, false
	}
	for _, p := range s.contestedLive(st.contested) {
		win, err := s.resolveOne(ctx, p, e.key, st)
		if err != nil {
			if ctx.Err() != nil {
				return st, unavailable("resolve with "+p, err), false
			}
			continue // not reachable after all: the contest stays open
		}
		if !win {
			s.dropStale(e, st)
			return st, &droppedError{winner: p}, false
		}
		st.contested = withoutName(st.contested, p)
		if !s.publish(e, st) {
			return st, &droppedError{}, false
		}
	}
	if !lease || s.fresh(st) {
		return st, nil, false
	}
	var r reply
	sent, err := s.call(ctx, st.secondary, methodVerify, verifyReq{From: s.self, Key: e.key, Epoch: st.epoch, Members: st.members}, &r)
	if err == nil {
		s.noteReply(st.secondary, sent, r.G, r.N)
		if r.St == stUnknown || r.St == stGap {
			// The secondary lost its copy (it restarted) or holds an
			// older one: copy ours again.
			r, err = s.apply(ctx, st.secondary, s.fullCopy(e.key, &st))
		}
	}
	if err != nil {
		if ctx.Err() != nil || !retryable(err) {
			return st, unavailable("verify with "+st.secondary, err), false
		}
		return st, err, true
	}
	switch r.St {
	case stOK:
		st.verifiedGen = r.G
		if !s.publish(e, st) {
			return st, &droppedError{}, false
		}
		return st, nil, false
	case stBusy:
		return st, errBusy, true
	case stGone:
		s.drop(e, "verify: invalidated")
		s.tomb.add(e.key, s.tombTTL())
		return st, errGoneCopy, false
	default:
		s.dropStale(e, st)
		return st, &droppedError{winner: st.secondary}, false
	}
}

// dropStale drops a primary copy found outdated and tells its secondary,
// whose copy is as outdated (it keeps a copy that ranks higher).
func (s *Sessions) dropStale(e *entry, st state) {
	if !s.dropIf(e, st, "stale: a newer copy exists") {
		return
	}
	s.stats.staleDrops.Add(1)
	s.log.Info("dropped a stale session copy", "key", e.key, "epoch", st.epoch)
	if st.secondary != "" {
		s.spawn(func() { s.sendDrop(st.secondary, e.key, st.rank(), false) })
	}
}

// resolveOne asks p whether our copy or its copy of key wins.
func (s *Sessions) resolveOne(ctx context.Context, p, key string, st state) (win bool, err error) {
	var r resolveReply
	req := resolveReq{From: s.self, Items: []rankWire{{Key: key, Epoch: st.epoch, Members: st.members, Primary: s.self}}}
	if _, err := s.call(ctx, p, methodResolve, req, &r); err != nil {
		return false, err
	}
	if len(r.St) != 1 {
		return false, fmt.Errorf("replication: resolve from %s: %d answers for 1 item", p, len(r.St))
	}
	return r.St[0] == stOK, nil
}

// acquire makes this node the primary of a session it does not serve:
// local is its secondary copy, if it has one. One acquisition per key
// runs at a time on a node; the others wait for it and return errRetry.
func (s *Sessions) acquire(ctx context.Context, rid ID, local *entry, hint []string) (*Session, error) {
	key := rid.Key
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if ch, ok := s.mu.taking[key]; ok {
		s.mu.Unlock()
		select {
		case <-ch:
			return nil, errRetry
		case <-ctx.Done():
			return nil, unavailable("waiting for a takeover", context.Cause(ctx))
		}
	}
	ch := make(chan struct{})
	s.mu.taking[key] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.taking, key)
		s.mu.Unlock()
		close(ch)
	}()
	// The table may have changed before we registered.
	if e := s.lookup(key); e != local || (local != nil && local.state().role != roleSecondary) {
		return nil, errRetry
	}

	var sources []string
	var localPrimary string
	var localState state
	if local != nil {
		localState = local.state()
		localPrimary = localState.primary
		sources = append(sources, localPrimary)
	}
	sources = append(sources, hint...)
	for _, nid := range []string{rid.Primary, rid.Secondary} {
		if n, ok := s.nameOf(nid); ok {
			sources = append(sources, n)
		}
	}
	seen := map[string]bool{s.self: true}
	var unreachable []string
	answers := map[string]status{}
	incs := map[string]uint64{}
	for i := 0; i < len(sources); i++ {
		src := sources[i]
		if seen[src] {
			continue
		}
		seen[src] = true
		var r takeReply
		_, err := s.call(ctx, src, methodTake, takeReq{From: s.self, Inc: s.inc, Key: key, Unreachable: unreachable}, &r)
		if err != nil {
			if ctx.Err() != nil {
				return nil, unavailable("take "+key+" from "+src, err)
			}
			unreachable = append(unreachable, src)
			continue
		}
		answers[src], incs[src] = r.St, r.Inc
		switch r.St {
		case stOK:
			return s.install(ctx, key, local, localState, &r, src)
		case stGone:
			if local != nil {
				s.drop(local, "take: invalidated")
			}
			s.tomb.add(key, s.tombTTL())
			return nil, fmt.Errorf("%w: %s was invalidated", ErrNotFound, key)
		case stUnknown:
			if r.Moved != "" && len(sources) < 16 {
				sources = append(sources, r.Moved) // follow the session
			}
		}
	}
	if local != nil {
		// Nobody handed the session over. Our own copy is the best there
		// is, unless its primary answered that it is busy with it.
		switch st, asked := answers[localPrimary]; {
		case !asked:
			return s.promoteLocal(ctx, local, localPrimary, true)
		case st == stUnknown && (incs[localPrimary] != localState.primaryInc || localState.pending):
			// The primary restarted and lost its copy, or it never
			// installed the session we handed over: ours is the one.
			return s.promoteLocal(ctx, local, localPrimary, false)
		case st == stUnknown:
			// The primary that gave us this copy moved on from it: it is
			// an orphan, not the session.
			s.dropIf(local, localState, "orphan: its primary moved on")
			if len(answers) > 0 {
				return nil, errRetry
			}
		}
	}
	for _, st := range answers {
		if st == stBusy {
			return nil, errBusy // Get tries again shortly
		}
	}
	if len(unreachable) > 0 {
		return nil, fmt.Errorf("%w: %s: unreachable: %v", ErrUnavailable, key, unreachable)
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
}

// install makes this node the primary of a session that src handed over,
// at the rank the handover set.
func (s *Sessions) install(ctx context.Context, key string, local *entry, seen state, r *takeReply, src string) (*Session, error) {
	e := local
	if e == nil {
		var err error
		e, err = s.insert(newEntry(key, s.now()))
		if err != nil {
			return nil, err
		}
	}
	if err := e.lock(ctx); err != nil {
		return nil, unavailable("install", err)
	}
	defer e.unlock()
	if cur := e.state(); local != nil && (cur.role != seen.role || cur.epoch != seen.epoch || cur.primary != seen.primary) {
		// Our copy changed while we asked (a peer's request moved it):
		// do not fork the session. The copy src kept for us is pending,
		// so it is found again by the next request.
		return nil, errBusy
	}
	attrs := attrsOf(r.Attrs)
	st := state{
		role:      rolePrimary,
		epoch:     r.Epoch,
		members:   r.Members,
		version:   r.Version,
		attrs:     attrs,
		size:      attrs.size(),
		primary:   s.self,
		contested: r.Contested,
	}
	err := s.placeSecondary(ctx, key, &st, nil)
	switch {
	case errors.Is(err, errStaleCopy), errors.Is(err, errGoneCopy):
		s.drop(e, "install found a newer copy")
		return nil, errRetry
	case st.secondary == "" && r.Kept != "" && s.isAlive(r.Kept):
		// The node that handed the session over kept a copy in our
		// lineage: it is our secondary until the next verify says
		// otherwise.
		st.secondary = r.Kept
	case err != nil:
		s.log.Warn("took a session over but could not give it a secondary", "key", key, "err", err)
	}
	if !s.publish(e, st) {
		return nil, errRetry
	}
	s.touch(e)
	s.stats.takeovers.Add(1)
	s.log.Info("took a session over", "key", key, "from", src, "epoch", st.epoch, "secondary", st.secondary)
	if kept := r.Kept; kept != "" && kept != st.secondary && kept != s.self {
		// The copy kept in our lineage is not needed.
		s.spawn(func() { s.sendDrop(kept, key, st.rank(), false) })
	}
	if old := r.Secondary; old != "" && old != st.secondary && old != s.self && old != src {
		s.spawn(func() { s.sendDrop(old, key, rank{r.Epoch, r.Members, s.self}, false) })
	}
	return newHandle(s, e, st), nil
}

// promoteLocal makes our secondary copy the primary one because its
// primary could not hand it over. When the primary might still serve it
// (contest), the lease we granted it must run out first.
func (s *Sessions) promoteLocal(ctx context.Context, e *entry, oldPrimary string, contest bool) (*Session, error) {
	if err := e.lock(ctx); err != nil {
		return nil, unavailable("promote", err)
	}
	defer e.unlock()
	st := e.state()
	if st.role != roleSecondary || st.primary != oldPrimary {
		return nil, errRetry
	}
	if contest {
		// The primary may still serve its copy: only if it is gone for
		// sure, and once the lease we granted it has run out.
		if !s.gone(ctx, oldPrimary) || !s.quorum() {
			return nil, fmt.Errorf("%w: %s: its primary %s is unreachable but not known to be gone", ErrUnavailable, e.key, oldPrimary)
		}
		if err := s.revoke(ctx, oldPrimary, false); err != nil {
			return nil, unavailable("waiting for the lease of "+oldPrimary, err)
		}
	}
	next := st
	next.role = rolePrimary
	next.primary = s.self
	next.epoch++
	next.members = s.liveCount()
	if contest {
		next.contested = withName(st.contested, oldPrimary)
	}
	err := s.placeSecondary(ctx, e.key, &next, map[string]bool{oldPrimary: contest})
	switch {
	case errors.Is(err, errStaleCopy), errors.Is(err, errGoneCopy):
		s.drop(e, "promoteLocal found a newer copy")
		return nil, errRetry
	case next.secondary == "" && contest && s.liveCount() > 1:
		// As in promote: without a new secondary we may be cut off.
		return nil, fmt.Errorf("%w: %s: no node took a copy", ErrUnavailable, e.key)
	case err != nil:
		s.log.Warn("promoted a session but could not give it a secondary", "key", e.key, "err", err)
	}
	if !s.publish(e, next) {
		return nil, errRetry
	}
	s.touch(e)
	s.stats.takeovers.Add(1)
	s.log.Info("promoted a session on request", "key", e.key, "old_primary", oldPrimary, "epoch", next.epoch, "secondary", next.secondary)
	return newHandle(s, e, next), nil
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
//
// Errors: ErrStale when this node no longer serves the session (nothing
// was saved: Get it again); ErrTooLarge; ErrUnavailable when, in
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
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	e := h.e
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
		e.unlock()
		if err == nil {
			h.saved(st, set, del)
			return nil
		}
		if !retry {
			return err
		}
		if !pause(ctx, changes, backoff) {
			return unavailable("secondary "+st.secondary+" did not acknowledge", err)
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func staleOr(err error) error {
	if _, ok := errors.AsType[*droppedError](err); ok || errors.Is(err, errGoneCopy) {
		return fmt.Errorf("%w: %w", ErrStale, err)
	}
	return err
}

func (s *Sessions) saveLocked(ctx context.Context, e *entry, set map[string][]byte, del []string) (st state, err error, retry bool) {
	st = e.state()
	if st.role != rolePrimary {
		return st, fmt.Errorf("%w: this node no longer serves %s", ErrStale, e.key), false
	}
	s.touch(e)
	if len(set)+len(del) == 0 {
		return st, nil, false
	}
	next := st
	next.attrs = st.attrs.with(set, del)
	next.size = next.attrs.size()
	if limit := s.opts.MaxSessionSize; next.size > limit {
		return st, fmt.Errorf("%w: %d bytes after the changes, limit %d", ErrTooLarge, next.size, limit), false
	}
	next.version = max(st.version, st.sent) + 1
	next.sent = next.version
	stale := func() error { return fmt.Errorf("%w: %s was dropped during Save", ErrStale, e.key) }
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
		return st, fmt.Errorf("%w: %s was invalidated", ErrStale, e.key), false
	default:
		s.dropStale(e, st)
		return st, fmt.Errorf("%w: another node holds a newer copy of %s", ErrStale, e.key), false
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
