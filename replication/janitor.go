package replication

import (
	"context"
	"slices"
	"time"
)

// The janitor: a periodic sweep of the table that expires idle copies,
// tells secondaries which sessions were used, repairs sessions without a
// secondary, and starts the failovers that events missed.

// wake makes the janitor sweep now rather than at its next tick.
func (s *Sessions) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// janitor expires idle copies, tells secondaries which sessions were
// used, gives a secondary to sessions that lack one, resolves copies
// contested with peers that came back, and forgets old tombstones and
// peers.
func (s *Sessions) janitor() {
	tick := s.opts.tick()
	t := time.NewTicker(tick)
	defer t.Stop()
	var buf []*entry
	for {
		select {
		case <-t.C:
		case <-s.kick:
		case <-s.ctx.Done():
			return
		}
		buf = s.appendEntries(buf)
		s.sweep(tick, buf)
		clear(buf) // keep no dropped entry alive until the next tick
	}
}

// peerView is what one sweep knows of the peers: each looked up once,
// not once per session, since a node may hold hundreds of thousands.
type peerView struct {
	s     *Sessions
	peers map[string]peerSeen
}

type peerSeen struct{ down, alive bool }

func (v *peerView) of(name string) peerSeen {
	p, ok := v.peers[name]
	if !ok {
		down, _ := v.s.down(name)
		p = peerSeen{down: down, alive: v.s.isAlive(name)}
		v.peers[name] = p
	}
	return p
}

func (s *Sessions) sweep(tick time.Duration, list []*entry) {
	now := s.now()
	idle := int64(s.opts.IdleTimeout)
	grace := int64(2 * tick)
	touches := map[string][]string{}
	contested := map[string][]*entry{}
	confirms := map[string][]*entry{}
	confirmAge := int64(4 * tick)
	peers := peerView{s: s, peers: map[string]peerSeen{}}
	var repairs, moves []*entry
	for _, e := range list {
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
			} else if peers.of(st.secondary).down {
				moves = append(moves, e)
			}
			for _, n := range st.contested {
				if peers.of(n).alive {
					contested[n] = append(contested[n], e)
				}
			}
		case roleSecondary:
			if age > idle+grace {
				s.dropIfIdle(s.ctx, e, st, "secondary expired")
				s.stats.expired.Add(1)
				continue
			}
			if p := peers.of(st.primary); p.down {
				moves = append(moves, e)
			} else if now-e.confirmed.Load() > confirmEvery(age, confirmAge) && p.alive {
				confirms[st.primary] = append(confirms[st.primary], e)
			}
		}
	}
	s.tomb.sweep(time.Now())
	s.moved.sweep(time.Now())
	s.prunePeers()
	for name, keys := range touches {
		s.wg.Go(func() { inChunks(keys, func(c []string) { s.sendTouch(name, c) }) })
	}
	if len(repairs) > 0 {
		s.wg.Go(func() { s.repair(repairs) })
	}
	if len(moves) > 0 && s.quorum() {
		// Failovers that an event started without quorum, or missed.
		s.wg.Go(func() { s.move(moves) })
	}
	for name, list := range contested {
		s.wg.Go(func() { inChunks(list, func(c []*entry) { s.resolveWith(name, c) }) })
	}
	for name, list := range confirms {
		s.wg.Go(func() { inChunks(list, func(c []*entry) { s.confirmWith(name, c) }) })
	}
}

// confirmEvery is how long after its last confirmation a secondary copy
// idle for age is confirmed again: after confirmAge, or after half its
// idle time when that is longer, but at most maxConfirmRounds times
// confirmAge. A copy goes astray only through an
// event (a drop or a takeover's answer that never arrived), and the
// next confirmation finds it out, within maxConfirmRounds confirmAges
// however long the copy was idle. Without the backoff a node holding
// hundreds of thousands of copies left by earlier traffic would ask
// about every one of them each confirmAge for as long as they live.
func confirmEvery(age, confirmAge int64) int64 {
	return max(confirmAge, min(age/2, maxConfirmRounds*confirmAge))
}

const maxConfirmRounds = 6

// sweepBatch bounds the sessions named in one request of the sweep: a
// node may hold hundreds of thousands, and a request that named them all
// would not fit a message, so it would fail on every sweep. An item is a
// key, a few numbers and at most a node name: 256 of them stay well
// within the 64 KiB that a message always has room for (frameOverhead).
const sweepBatch = 256

// inChunks calls fn on list in pieces of at most sweepBatch, one after
// the other.
func inChunks[T any](list []T, fn func([]T)) {
	for c := range slices.Chunk(list, sweepBatch) {
		fn(c)
	}
}

// expire drops an idle primary copy and tells its secondary.
func (s *Sessions) expire(e *entry, st state) {
	if !e.tryLock() { // busy sessions are not idle; try next tick
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
			s.backed(e, st.epoch, name)
			continue
		case stUnknown:
			if st.primaryInc != r.I || st.pending() {
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
		if s.dropIfIdle(s.ctx, e, st, "confirm: orphan, answer "+r.St[i].String()) {
			s.movedTo(e.key, name)
		}
	}
}
