package replication

import (
	"context"
	"errors"
	"sync"
)

// Failover: when a peer's sessions are gone, its sessions move. A copy
// this node backs for it is promoted; a session whose secondary it was
// gets a new one; contested copies are compared once the peer is back.

// failoverParallelism bounds the sessions one failover moves at a time.
const failoverParallelism = 8

func (s *Sessions) goFailover(name string, failed bool) {
	s.spawn(func() { s.failover(name, failed) })
}

// failover reacts to a peer whose sessions are gone: membership declared
// it failed (failed true) or it left, or its sessions stopped (its tag
// TagKey went away). Every copy we back for it is promoted; every
// session we serve whose secondary it was gets a new secondary. When it
// failed, it may come back with copies that diverged meanwhile (a
// partition, a pause), so the sessions record it as contested until the
// two copies are compared.
func (s *Sessions) failover(name string, failed bool) {
	if !s.quorum() {
		s.log.Warn("not taking sessions over: this node does not see a majority of the recent session nodes", "peer", name)
		return
	}
	var list []*entry
	for _, e := range s.entries() {
		st := e.state()
		if (st.role == roleSecondary && st.primary == name) || (st.role == rolePrimary && st.secondary == name) {
			list = append(list, e)
		}
	}
	if len(list) == 0 {
		return
	}
	s.log.Info("moving the sessions of a peer whose sessions are gone", "peer", name, "failed", failed, "sessions", len(list))
	s.move(list)
}

// move promotes or re-homes each entry whose primary or secondary is
// down, a few at a time.
func (s *Sessions) move(list []*entry) {
	sem := make(chan struct{}, failoverParallelism)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, e := range list {
		if !e.moving.CompareAndSwap(false, true) {
			continue // already under way
		}
		select {
		case sem <- struct{}{}:
		case <-s.ctx.Done():
			e.moving.Store(false)
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			defer e.moving.Store(false)
			st := e.state()
			switch st.role {
			case roleSecondary:
				if down, failed := s.down(st.primary); down {
					s.promote(e, st.primary, failed)
				}
			case rolePrimary:
				if down, failed := s.down(st.secondary); down && st.secondary != "" {
					s.rehome(e, st.secondary, failed)
				}
			}
		})
	}
}

// promote makes our secondary copy the primary one after its primary is
// gone: once the lease we granted it has run out, at the next epoch, with
// a new secondary. It gives up if the old primary comes back first, and
// commits nothing unless a new secondary took the copy or no other node
// is alive: a node cut off from the rest cannot commit a takeover even
// before it notices that it is alone.
func (s *Sessions) promote(e *entry, oldPrimary string, failed bool) {
	if err := e.lock(s.ctx); err != nil {
		return
	}
	defer e.unlock()
	st := e.state()
	if st.role != roleSecondary || st.primary != oldPrimary {
		return
	}
	if st.pending() || st.provisional {
		// Maybe not the copy the primary counted on: it may have put
		// another secondary in place, which promotes. A request for the
		// session asks every node before this copy is promoted (acquire).
		s.log.Debug("promotion left to a request: the primary never confirmed this copy", "session", keyRef(e.key), "primary", oldPrimary)
		return
	}
	if err := s.revoke(s.ctx, oldPrimary, true); err != nil {
		if errors.Is(err, errPeerBack) {
			s.log.Debug("primary came back before promotion", "session", keyRef(e.key), "primary", oldPrimary)
		}
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	defer cancel()
	if failed && !s.agreedDown(ctx, oldPrimary, e.key, st.epoch+1) {
		s.log.Debug("promotion postponed: most session nodes do not see the primary down", "session", keyRef(e.key), "primary", oldPrimary)
		return
	}
	next := st
	next.role = rolePrimary
	next.primary = s.self
	next.epoch++
	next.members = s.liveCount()
	if failed {
		next.contested = withName(st.contested, oldPrimary)
	}
	err := s.placeSecondary(ctx, e.key, &next, map[string]bool{oldPrimary: true})
	switch {
	case errors.Is(err, errStaleCopy), errors.Is(err, errGoneCopy):
		s.drop(e, "promotion found a newer copy")
		return
	case next.secondary == "" && s.liveCount() > 1:
		// Other nodes are alive but none took a copy: we may be the one
		// cut off. Commit nothing; the janitor tries again.
		s.log.Debug("no secondary reachable, promotion postponed", "session", keyRef(e.key), "err", err)
		return
	}
	if s.publish(e, next) {
		s.stats.promotions.Add(1)
		s.log.Debug("promoted a session", "session", keyRef(e.key), "old_primary", oldPrimary, "epoch", next.epoch, "secondary", next.secondary)
	}
}

// rehome gives a session we serve a new secondary in place of old, at
// the next epoch. With contest, old may come back with a diverged copy.
func (s *Sessions) rehome(e *entry, old string, contest bool) {
	if err := e.lock(s.ctx); err != nil {
		return
	}
	defer e.unlock()
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	defer cancel()
	s.rehomeLocked(ctx, e, old, contest)
}

// replaceDead gives e, a primary copy whose secondary did not answer, a
// new secondary at once when the old one is dead (its port refused the
// connection or its sessions are shut down: see gone), rather than wait
// for failure detection: a crashed secondary then costs a request only
// the time to copy the session elsewhere. The caller holds e's write
// lock. It reports whether the secondary changed.
func (s *Sessions) replaceDead(ctx context.Context, e *entry) bool {
	old := e.state().secondary
	if old == "" {
		return false
	}
	if _, dead := s.gone(ctx, old); !dead {
		return false
	}
	return s.rehomeLocked(ctx, e, old, false)
}

// rehomeLocked is rehome under e's write lock, bounded by ctx. It
// reports whether the session got a new secondary.
func (s *Sessions) rehomeLocked(ctx context.Context, e *entry, old string, contest bool) bool {
	st := e.state()
	if st.role != rolePrimary || st.secondary != old {
		return false
	}
	if contest && old != "" && !s.agreedDown(ctx, old, e.key, st.epoch+1) {
		// Failure detection also fires on a cut, and after a heal the
		// two sides' views differ for a while: the secondary may be back
		// and promoting our copy. Only a quorum that sees it down keeps
		// two lineages of the session from going on at once.
		s.log.Debug("re-homing postponed: most session nodes do not see the secondary down", "session", keyRef(e.key), "secondary", old)
		return false
	}
	next := st
	next.epoch++
	next.members = s.liveCount()
	if contest && old != "" {
		next.contested = withName(st.contested, old)
	}
	exclude := map[string]bool{}
	if old != "" {
		exclude[old] = true
	}
	err := s.placeSecondary(ctx, e.key, &next, exclude)
	switch {
	case errors.Is(err, errStaleCopy), errors.Is(err, errGoneCopy):
		s.dropStale(e, st)
		return false
	case next.secondary == "" && (old == "" || s.liveCount() > 1):
		// Nothing changes, or other nodes are alive but none took a
		// copy: we may be the one cut off. The janitor tries again.
		s.log.Debug("no secondary reachable, re-homing postponed", "session", keyRef(e.key), "err", err)
		return false
	}
	if !s.publish(e, next) {
		return false
	}
	s.stats.rehomes.Add(1)
	s.log.Debug("new secondary", "session", keyRef(e.key), "old", old, "new", next.secondary, "epoch", next.epoch)
	return true
}

// repair gives a secondary to sessions that have none.
func (s *Sessions) repair(list []*entry) {
	for _, e := range list {
		if s.ctx.Err() != nil {
			return
		}
		st := e.state()
		if st.role != rolePrimary {
			continue
		}
		if st.secondary == "" {
			if !s.hasCandidate() {
				return // none for anyone
			}
			s.rehome(e, "", false)
		}
	}
}

// resolveWith compares our copies contested with a peer that is back with
// its copies, and drops ours where its copy wins.
func (s *Sessions) resolveWith(name string, list []*entry) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	defer cancel()
	items := make([]rankWire, 0, len(list))
	states := make([]state, 0, len(list))
	for _, e := range list {
		st := e.state()
		items = append(items, rankWire{Key: e.key, Epoch: st.epoch, Members: st.members, Primary: s.self})
		states = append(states, st)
	}
	var r resolveReply
	if _, err := s.call(ctx, name, methodResolve, resolveReq{From: s.self, Items: items}, &r); err != nil {
		s.log.Debug("resolve failed", "peer", name, "err", err)
		return
	}
	if len(r.St) != len(items) {
		s.log.Warn("resolve: wrong number of answers", "peer", name, "want", len(items), "got", len(r.St))
		return
	}
	for i, e := range list {
		if err := e.lock(ctx); err != nil {
			return
		}
		st := e.state()
		if st.role == rolePrimary && st.epoch == states[i].epoch {
			switch r.St[i] {
			case stOK:
				st.contested = withoutName(st.contested, name)
				s.publish(e, st)
			case stStale:
				s.dropStale(e, st)
			} // busy: the contest stays open for the next round
		}
		e.unlock()
	}
}
