package replication

import (
	"context"
	"errors"
	"fmt"
)

// Takeover on request: a Get on a node that is not the session's primary
// makes it the primary, taking the session from its holders or, when
// they cannot hand it over, promoting this node's own secondary copy.

// acquire makes this node the primary of a session it does not serve:
// local is its secondary copy, if it has one. One acquisition per key
// runs at a time on a node; the others wait for it and return errRetry.
func (s *Sessions) acquire(ctx context.Context, rid ID, local *entry, hint []string) (*Session, error) {
	key := rid.Key
	if !s.quorum() {
		// A node on the minority side takes nothing over, not even from
		// a primary on its own side: the majority may have promoted the
		// session's old secondary meanwhile, and two lineages would be
		// served at once.
		return nil, fmt.Errorf("%w: session %s: this node does not see a majority of the session nodes, so it takes no session over",
			ErrUnavailable, keyRef(key))
	}
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
	if moved, ok := s.moved.get(key); ok {
		sources = append(sources, moved)
	}
	seen := map[string]bool{s.self: true}
	var unreachable []string
	answers := map[string]takeReply{}
	broadened := false
	for i := 0; ; i++ {
		if i == len(sources) {
			// Not found where the route and the pointers lead. Before
			// telling the caller that a session is gone (its user then
			// starts afresh), ask every other live node: a copy kept
			// for a new primary that never installed it is found by no
			// pointer. And before promoting such a copy of our own
			// (pending), ask them too: the session's secondary may have
			// promoted its copy meanwhile (failover), and the session
			// then lives on there, not in ours.
			if broadened || (local != nil && !unconfirmed(localState)) || !allUnknown(answers) {
				break
			}
			broadened = true
			live, lost := s.voters()
			// And the peers we see failed: the session may live on one
			// (where it went while this node was cut off, or where it
			// was when we lost sight of that peer), which may be back,
			// a healed cut, before failure detection says so.
			sources = append(sources, live...)
			sources = append(sources, lost...)
			if i == len(sources) {
				break
			}
		}
		src := sources[i]
		if seen[src] {
			continue
		}
		seen[src] = true
		var r takeReply
		req := takeReq{From: s.self, Inc: s.inc, Key: key, Unreachable: unreachable}
		_, err := s.call(ctx, src, methodTake, req, &r)
		if errors.Is(err, errPeerGone) && s.lostVoter(src) {
			// Seen failed, so not asked by call; but it may be back, and
			// until it answers (or is found dead) a "not found" is a
			// guess. Ask it within a lease, so that a vanished host
			// costs a request no more.
			pctx, cancel := context.WithTimeout(ctx, s.opts.LeaseTerm)
			_, err = s.callAny(pctx, src, methodTake, req, &r)
			cancel()
			if processGone(err) {
				continue // its process is gone, and every copy it held
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, unavailable("take session "+keyRef(key).String()+" from "+src, err)
			}
			unreachable = append(unreachable, src)
			continue
		}
		answers[src] = r
		switch r.St {
		case stOK:
			return s.install(ctx, key, local, localState, &r, src)
		case stGone:
			if local != nil {
				s.drop(local, "take: invalidated")
			}
			s.tomb.add(key, s.tombTTL())
			return nil, fmt.Errorf("%w: session %s was invalidated", ErrNotFound, keyRef(key))
		case stUnknown:
			if r.Moved != "" && len(sources) < 16 {
				sources = append(sources, r.Moved) // follow the session
			}
		}
	}
	if local != nil {
		// Nobody handed the session over. Our own copy is the best there
		// is, unless its primary answered that it is busy with it.
		switch r, asked := answers[localPrimary]; {
		case !asked && unconfirmed(localState) && !only(unreachable, localPrimary):
			// As below: ours may not be the copy its primary counted on,
			// and the one that is may be where we could not ask.
			return nil, fmt.Errorf("%w: session %s: a copy may live on at %v, which did not answer", ErrUnavailable, keyRef(key), unreachable)
		case !asked && unconfirmed(localState) && !allUnknown(answers):
			return nil, errBusy // a node holding a copy was busy: ask again
		case !asked:
			return s.promoteLocal(ctx, local, localPrimary, true)
		case r.St == stUnknown && neverInstalled(localState, &r):
			// The primary restarted and lost its copy, or it never
			// installed the session we handed over: ours is the one,
			// if it is the only one. A copy the primary may not count
			// on (unconfirmed) is not when another lives on where we
			// could not ask: the old secondary of a handover that
			// promoted its own while we were cut off, or the secondary
			// the primary chose when our answer did not reach it.
			if unconfirmed(localState) && len(unreachable) > 0 {
				return nil, fmt.Errorf("%w: session %s: a copy may live on at %v, which did not answer", ErrUnavailable, keyRef(key), unreachable)
			}
			if unconfirmed(localState) && !allUnknown(answers) {
				return nil, errBusy // Get tries again shortly
			}
			return s.promoteLocal(ctx, local, localPrimary, false)
		case r.St == stUnknown:
			// The primary that gave us this copy moved on from it: it is
			// an orphan, not the session.
			s.dropIfIdle(ctx, local, localState, "orphan: its primary moved on")
			if len(answers) > 0 {
				return nil, errRetry
			}
		}
	}
	for _, r := range answers {
		if r.St == stBusy {
			return nil, errBusy // Get tries again shortly
		}
	}
	if len(unreachable) > 0 {
		return nil, fmt.Errorf("%w: session %s: unreachable: %v", ErrUnavailable, keyRef(key), unreachable)
	}
	if !s.quorum() {
		// Asked again after the peers, which takes a while: a cut that
		// came meanwhile may hide the copies, and "not found" would make
		// the caller start the user afresh.
		return nil, fmt.Errorf("%w: session %s: not on this side of the cluster, which has no quorum", ErrUnavailable, keyRef(key))
	}
	return nil, fmt.Errorf("%w: session %s", ErrNotFound, keyRef(key))
}

// install makes this node the primary of a session that src handed over,
// at the rank the handover set.
func (s *Sessions) install(ctx context.Context, key string, local *entry, seen state, r *takeReply, src string) (*Session, error) {
	e := local
	created := false
	if e == nil {
		fresh := newEntry(key, s.now())
		var err error
		if e, err = s.insert(fresh); err != nil {
			return nil, err
		}
		created = e == fresh // else a copy arrived meanwhile
	}
	if err := e.lock(ctx); err != nil {
		return nil, unavailable("install", err)
	}
	defer e.unlock()
	if cur := e.state(); (local != nil && (cur.role != seen.role || cur.epoch != seen.epoch || cur.primary != seen.primary)) ||
		(local == nil && cur.role != roleNone) {
		// Our copy changed while we asked (a peer's request moved it), or
		// one arrived: do not fork the session. The copy src kept for us
		// is pending, so it is found again by the next request.
		return nil, errBusy
	}
	since := r.Since
	if since == 0 {
		since = r.Epoch - 1 // a peer from before Since
	}
	if local != nil && since < seen.standing().epoch {
		// src handed over a copy from before ours: an old secondary's,
		// or one another node kept from an earlier handover, not yet
		// dropped, while ours is the copy we kept when we handed the
		// session on. Installing it would fork the session from an
		// older point. (Compared by standing: a kept copy's own epoch
		// grows each time it is handed over again.)
		return nil, errRetry
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
	// The old secondary holds a copy whose primary is src, and would
	// promote it on seeing src fail: a drop sent later can be lost in a
	// cut, and the session would fork. So it becomes our secondary when
	// it answers; when it does not, we go on only if it is dead or a
	// quorum sees it down.
	var err error
	if old := r.Secondary; old != "" && old != s.self && old != src {
		var placed bool
		placed, err = s.placeAt(ctx, key, &st, old)
		if errors.Is(err, errBusy) {
			// It is alive and busy with its copy: promoting it, say,
			// as src left. Ask again shortly; the copy src kept for us
			// is pending, so the next request finds it.
			if created {
				s.drop(e, "install: the old secondary is busy")
			}
			return nil, errBusy
		}
		if !placed && (err == nil || ctx.Err() != nil) {
			if ok, _ := s.mayTakeFrom(ctx, old, key, r.Epoch); !ok || ctx.Err() != nil {
				if created {
					s.drop(e, "install: the old secondary is unreachable")
				}
				return nil, fmt.Errorf("%w: session %s: its secondary %s is unreachable but not known to be down", ErrUnavailable, keyRef(key), old)
			}
			err = s.placeSecondary(ctx, key, &st, map[string]bool{old: true})
		}
	} else {
		err = s.placeSecondary(ctx, key, &st, nil)
	}
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
		s.log.Debug("took a session over but could not give it a secondary", "session", keyRef(key), "err", err)
	}
	if !s.publish(e, st) {
		return nil, errRetry
	}
	s.moved.forget(key) // the session is here again
	s.touch(e)
	s.stats.takeovers.Add(1)
	s.log.Debug("took a session over", "session", keyRef(key), "from", src, "epoch", st.epoch, "secondary", st.secondary)
	s.hopped()
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
		// sure, and once the lease we granted it has run out (at once
		// when its process answered that it serves nothing).
		ok, dead := s.mayTakeFrom(ctx, oldPrimary, e.key, st.epoch+1)
		if !ok {
			return nil, fmt.Errorf("%w: session %s: its primary %s is unreachable but not known to be gone", ErrUnavailable, keyRef(e.key), oldPrimary)
		}
		if err := s.release(ctx, oldPrimary, dead); err != nil {
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
		return nil, fmt.Errorf("%w: session %s: no node took a copy", ErrUnavailable, keyRef(e.key))
	case err != nil:
		s.log.Debug("promoted a session but could not give it a secondary", "session", keyRef(e.key), "err", err)
	}
	if !s.publish(e, next) {
		return nil, errRetry
	}
	s.touch(e)
	s.stats.takeovers.Add(1)
	if !contest {
		s.hopped() // its live primary handed it over
	}
	s.log.Debug("promoted a session on request", "session", keyRef(e.key), "old_primary", oldPrimary, "epoch", next.epoch, "secondary", next.secondary)
	return newHandle(s, e, next), nil
}

// unconfirmed reports whether st, a secondary copy, may not be the copy
// its primary counts on: one kept for a handover (pending), or one whose
// full copy the primary may never have had the answer to (provisional).
func unconfirmed(st state) bool { return st.pending() || st.provisional }

// only reports whether names holds nothing but name.
func only(names []string, name string) bool {
	for _, n := range names {
		if n != name {
			return false
		}
	}
	return true
}

// allUnknown reports whether every node asked answered that it holds no
// copy.
func allUnknown(answers map[string]takeReply) bool {
	for _, r := range answers {
		if r.St != stUnknown {
			return false
		}
	}
	return true
}
