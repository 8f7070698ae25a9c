package replication

import (
	"cmp"
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/internal/quorum"
	"github.com/troupe-go/troupe/membership"
)

// The other nodes that hold sessions, as membership events report them;
// the placement of secondaries among them; quorum; and whether a peer is
// gone for sure.

// peer is what this node knows about another member.
type peer struct {
	name  string
	id    string
	tag   string // its TagKey: the incarnation of its Sessions, "" if it has none
	group string
	alive bool // a live member that holds sessions
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
	tag := m.Tag(TagKey)
	s.pmu.Lock()
	p := s.peerLocked(m.Name)
	was, wasTag := p.alive, p.tag
	p.group = m.Group
	p.tag = tag
	p.alive = tag != ""
	if was && !p.alive {
		p.downAt, p.failed = time.Now(), false
	}
	if p.alive && tag != wasTag {
		// A new incarnation: what the old one reported does not hold.
		p.leaseUntil, p.gen, p.count = time.Time{}, 0, 0
	}
	if p.alive {
		other, taken := s.pmu.byID[p.id]
		if taken && other != p.name {
			// The smaller name keeps the id, on every node alike.
			s.log.Warn("two nodes share a session node id; rename one", "id", p.id, "a", other, "b", p.name)
		}
		if !taken || other >= p.name {
			s.pmu.byID[p.id] = p.name
		}
	} else if s.pmu.byID[p.id] == p.name {
		delete(s.pmu.byID, p.id)
	}
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

// peerLocked returns the entry of a member, creating it. Only names that
// membership reported (events, admit) or that this node called reach it:
// never a name taken from a request's fields.
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

// isAlive reports whether name is a live member that holds sessions.
func (s *Sessions) isAlive(name string) bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	p := s.pmu.peers[name]
	return p != nil && p.alive
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
	return s.liveLocked()
}

func (s *Sessions) liveLocked() int {
	n := 1
	for _, p := range s.pmu.peers {
		if p.alive {
			n++
		}
	}
	return n
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

// alone reports whether this node has seen no other session node alive
// or failing within QuorumWindow: a cluster of one.
func (s *Sessions) alone() bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, p := range s.pmu.peers {
		if p.alive || (p.failed && time.Since(p.downAt) < s.opts.QuorumWindow) {
			return false
		}
	}
	return true
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

// gone reports whether name's sessions are certainly not served any
// more: membership says it is not alive, or it runs but its sessions do
// not (they were shut down: see notServing), or its transport refuses
// connections (the process stopped). A paused process or a network cut
// does not refuse: a peer that is merely unreachable is not gone, it may
// be serving on the other side of a cut.
//
// dead reports the stronger finding that the peer itself answered: its
// port refused the connection or its sessions are shut down. Such a peer
// serves nothing, lease or not, so a takeover need not wait for the
// lease this node granted it to run out. A peer that membership declared
// failed is gone but not dead: failure detection also fires on a cut.
func (s *Sessions) gone(ctx context.Context, name string) (gone, dead bool) {
	if !s.isAlive(name) {
		return true, false
	}
	for range 3 { // a pooled connection may die first; the next call dials
		_, err := s.ch.Call(ctx, name, methodPing, nil)
		switch {
		case err == nil:
			return false, false
		case processGone(err):
			return true, true
		case errors.Is(err, membership.ErrUnknownMember):
			return true, false
		case !errors.Is(err, membership.ErrUnreachable):
			return false, false
		}
	}
	return false, false
}

// quorum reports whether this node may act for the session nodes
// (internal/quorum): it sees a strict majority of those alive or failed
// within the last QuorumWindow, itself included, or exactly half with the
// tie-breaker. Nodes that left are not counted. Only then does it take
// over the sessions of failed peers, or acknowledge a Save.
//
// Peers that failure detection suspects count as lost: a node cut off
// from most of the cluster learns of the failures one at a time, and
// would otherwise act on the first while it still counts a majority.
func (s *Sessions) quorum() bool {
	var t quorum.Tally
	s.eachVoter(t.Add)
	return t.Holds()
}

// voters returns the session nodes that quorum counts: those this node
// sees alive (itself included), and those it sees failed within
// QuorumWindow or suspects.
func (s *Sessions) voters() (live, lost []string) {
	s.eachVoter(func(name string, alive bool) {
		if alive {
			live = append(live, name)
		} else {
			lost = append(lost, name)
		}
	})
	return live, lost
}

// lostVoter reports whether name is a voter this node does not see
// alive: failed within QuorumWindow, or suspected.
func (s *Sessions) lostVoter(name string) bool {
	lost := false
	s.eachVoter(func(n string, alive bool) {
		if n == name {
			lost = !alive
		}
	})
	return lost
}

// eachVoter calls fn for every voter, itself first. fn runs under pmu:
// it must only count.
func (s *Sessions) eachVoter(fn func(name string, alive bool)) {
	suspects := s.cluster.Suspects()
	s.pmu.Lock()
	defer s.pmu.Unlock()
	fn(s.self, true)
	for _, p := range s.pmu.peers {
		switch {
		case p.alive && slices.Contains(suspects, p.name):
			fn(p.name, false)
		case p.alive:
			fn(p.name, true)
		case p.failed && time.Since(p.downAt) < s.opts.QuorumWindow:
			fn(p.name, false)
		}
	}
}

// seesDown reports whether this node sees name down: not a live member,
// or suspected by failure detection.
func (s *Sessions) seesDown(name string) bool {
	return !s.isAlive(name) || slices.Contains(s.cluster.Suspects(), name)
}

// agreedDown reports whether a quorum of the session nodes sees peer
// down: this node and the live peers that answer so when asked. One
// node's failure detector is not enough to take over a peer's sessions
// or to replace it as a secondary: after a heal the views differ for a
// while, and a node that still sees peer failed while the others see it
// back would start a second lineage of sessions that peer still serves.
//
// The same round vetoes the move of session key to epoch when any node
// answers that it holds a copy of another lineage at that epoch or later:
// during a heal, a node's view may say down while the session moved on
// without this node, and two lineages at one epoch would leave the winner
// to chance.
func (s *Sessions) agreedDown(ctx context.Context, peer, key string, epoch uint64) bool {
	live, lost := s.voters()
	var vetoed atomic.Bool
	agreed := quorum.Poll(s.self, live, lost, func(name string) bool {
		if name == peer {
			return false
		}
		var r downReply
		_, err := s.call(ctx, name, methodDown, downReq{From: s.self, Peer: peer, Key: key, Epoch: epoch}, &r)
		if err == nil && r.Newer {
			vetoed.Store(true)
		}
		return err == nil && r.Down
	})
	return agreed && !vetoed.Load()
}

// holdsNewer reports whether this node holds a copy of key, of a lineage
// other than from's, at epoch or later (see agreedDown).
func (s *Sessions) holdsNewer(from, key string, epoch uint64) bool {
	if key == "" {
		return false
	}
	e := s.lookup(key)
	if e == nil {
		return false
	}
	st := e.state()
	sd := st.standing()
	return st.role != roleNone && sd.primary != from && sd.epoch >= epoch
}

// mayTakeFrom reports whether this node may move session key to epoch
// without peer, which it could not reach: peer is gone (see gone), this
// node holds the quorum, and, unless peer is dead, a quorum agrees that
// it is down and no node holds a newer lineage (agreedDown). dead is
// gone's.
func (s *Sessions) mayTakeFrom(ctx context.Context, peer, key string, epoch uint64) (ok, dead bool) {
	gone, dead := s.gone(ctx, peer)
	if !gone || !s.quorum() {
		return false, dead
	}
	return dead || s.agreedDown(ctx, peer, key, epoch), dead
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

// unpick ends a pick's reservation.
func (s *Sessions) unpick(name string) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if p := s.pmu.peers[name]; p != nil && p.pending > 0 {
		p.pending--
	}
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
		placed, err := s.placeAt(ctx, key, st, name)
		s.unpick(name)
		if errors.Is(err, errBusy) {
			continue // as a refusal: another candidate
		}
		if placed || err != nil {
			return err
		}
	}
	return nil
}

// placeAt gives st the secondary name, with a full copy. placed is
// false, with no error, when name could not be reached or refused, and
// with errBusy when it answered that its copy is busy (being promoted,
// say).
func (s *Sessions) placeAt(ctx context.Context, key string, st *state, name string) (placed bool, err error) {
	// Through the group commit: concurrent Creates share requests.
	r, err := s.applySync(ctx, name, s.fullCopy(key, st))
	if err != nil {
		if ctx.Err() != nil {
			return false, context.Cause(ctx)
		}
		s.log.Debug("secondary candidate refused a copy", "peer", name, "err", err)
		return false, nil
	}
	switch r.St {
	case stOK:
		st.secondary = name
		st.verifiedGen = r.G
		return true, nil
	case stStale:
		return false, errStaleCopy
	case stGone:
		return false, errGoneCopy
	case stBusy:
		return false, errBusy
	}
	return false, nil
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
