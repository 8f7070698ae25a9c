package replication

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Leases: a primary serves a copy without asking its secondary only while
// the secondary's lease runs (fresh, check); a secondary takes a
// primary's session over only once the lease it granted has run out
// (grant, revoke). See "Epochs, leases and stale copies" in doc.go.

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
	if s.settled(st, lease) {
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
		replaced := unreachable && !errors.Is(err, errBusy) && s.replaceDead(ctx, e)
		e.unlock()
		if !unreachable {
			return st, err
		}
		if replaced {
			continue // the new secondary confirms at once
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

// settled reports whether this primary's copy st may be served as it
// is: no contest is open with a live node and, if lease, the lease is
// fresh. Then check asks nobody.
func (s *Sessions) settled(st state, lease bool) bool {
	return len(s.contestedLive(st.contested)) == 0 && (!lease || s.fresh(st))
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
	case stTooLarge:
		// The secondary lost its copy and cannot take ours back: it runs
		// with a smaller MaxSessionSize. Not a reason to drop ours.
		return st, unavailable("secondary "+st.secondary, fmt.Errorf("%w: it refused a full copy", ErrTooLarge)), false
	default:
		s.dropStale(e, st)
		return st, &droppedError{winner: st.secondary}, false
	}
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

// grant extends the lease of a peer that sent us a request; the caller
// has admitted it (see admit): only members get an entry in the table.
func (s *Sessions) grant(from string) {
	until := time.Now().Add(s.opts.LeaseTerm)
	s.pmu.Lock()
	defer s.pmu.Unlock()
	p := s.peerLocked(from)
	if until.After(p.grantedUntil) {
		p.grantedUntil = until
	}
}

// admitGrant is admit and grant for changes on their hot path: one
// look at the table when the sender is a live peer there.
func (s *Sessions) admitGrant(from string) bool {
	until := time.Now().Add(s.opts.LeaseTerm)
	s.pmu.Lock()
	if p := s.pmu.peers[from]; p != nil && p.alive && from != s.self {
		if until.After(p.grantedUntil) {
			p.grantedUntil = until
		}
		s.pmu.Unlock()
		return true
	}
	s.pmu.Unlock()
	if !s.admit(from) {
		return false
	}
	s.grant(from)
	return true
}

// grantGen returns the generation we report to a peer.
func (s *Sessions) grantGen(from string) uint64 {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if p := s.pmu.peers[from]; p != nil {
		return p.grantGen
	}
	return 0
}

// revokeDead is revoke for a peer found dead (see gone): its process
// serves nothing, so the lease granted to it ends now.
func (s *Sessions) revokeDead(name string) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if p := s.pmu.peers[name]; p != nil {
		p.grantedUntil = time.Now()
		p.grantGen++
	}
}

// release ends the lease granted to oldPrimary before one of its
// sessions is taken over: at once when it is dead, else once the lease
// has run out (revoke).
func (s *Sessions) release(ctx context.Context, oldPrimary string, dead bool) error {
	if dead {
		s.revokeDead(oldPrimary)
		return nil
	}
	return s.revoke(ctx, oldPrimary, false)
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
		p := s.pmu.peers[name]
		if p == nil {
			// Never granted anything, or forgotten long after it went.
			s.pmu.Unlock()
			return nil
		}
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
