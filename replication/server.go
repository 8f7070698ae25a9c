package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/troupe-go/troupe/internal/wire"
	"github.com/troupe-go/troupe/membership"
)

// The server side of the session protocol: peers' calls to this node on
// the sessions channel. client.go makes them.

// server is the handler of the sessions channel: it answers peers'
// requests. Malformed requests get an error that wraps errBadRequest (the
// peer sees a *membership.RemoteError); a request never panics or blocks
// the node beyond its own session's lock.
type server struct{ s *Sessions }

var _ membership.InlineCallHandler = server{}

// HandleCall serves a peer's request on a goroutine of its own. The
// request counts as a goroutine of Sessions, which Shutdown waits for,
// and its ctx ends at Shutdown.
func (h server) HandleCall(ctx context.Context, from, method string, req []byte) ([]byte, error) {
	s := h.s
	if !s.enter() {
		return nil, errPeerClosed
	}
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	defer func() {
		stop()
		cancel()
	}()
	resp, err := s.serve(ctx, from, method, req)
	return resp, callError(err)
}

// TryHandleCall serves changes on the transport's reader goroutine,
// which spares a Save two goroutine hand-offs, as long as no session they
// touch is locked; otherwise it leaves them to HandleCall. It never
// blocks: the locks it takes (the table's, the peers', a copy's mu) are
// never held across I/O, and a session's write lock is only tried.
func (h server) TryHandleCall(ctx context.Context, from, method string, req []byte) ([]byte, bool, error) {
	switch method {
	case methodApply, methodBatch:
		if h.s.isClosed() {
			return nil, true, errPeerClosed
		}
		resp, err, busy := h.s.serveApply(ctx, from, method, req, false)
		return resp, !busy, callError(err)
	}
	return nil, false, nil
}

// HandleMessage drops one-way messages: the protocol has none.
func (server) HandleMessage(string, []byte) {}

// LocalState shares nothing in the cluster's state exchange.
func (server) LocalState(bool) []byte { return nil }

// MergeRemoteState ignores the state exchange.
func (server) MergeRemoteState(string, []byte, bool) {}

// callError makes every error the handler returns match one of
// callErrors.
func callError(err error) error {
	if err == nil || errors.Is(err, errPeerClosed) || errors.Is(err, errBadRequest) || errors.Is(err, errRefused) {
		return err
	}
	return fmt.Errorf("%w: %w", errBadRequest, err)
}

// handlerWait bounds how long a request from a peer waits for a
// session's lock.
func (s *Sessions) handlerWait() time.Duration { return max(s.opts.LeaseTerm/2, minTimeout) }

// Identity. A request's sender is from, the name its node proved in the
// transport's handshake (with the cluster key or its certificate), never
// a field of the request. The From fields are left in the messages'
// positional layout (codec.go writes them by hand), but they name no one:
// a request whose From names another node is refused, with one exception: a take that a session's secondary relays
// to the primary on behalf of the node that asked it (takeOne) names
// that node. Every request but a ping is served only for a live member
// that holds sessions (admit); anything else is refused with errRefused
// and counted (Stats.Refused), and leaves nothing behind: no peer, no
// lease, no copy.

// admit reports whether from is a live member that holds sessions: as
// this node's table of peers says, or, when the member event has not
// reached the table yet, as membership says.
func (s *Sessions) admit(from string) bool {
	if from == "" || from == s.self {
		return false
	}
	s.pmu.Lock()
	p := s.pmu.peers[from]
	ok := p != nil && p.alive
	s.pmu.Unlock()
	if ok {
		return true
	}
	m, ok := s.cluster.Member(from)
	return ok && m.Tag(TagKey) != ""
}

// refuse counts a refused request and says why, naming the sender
// (shortened: it may be anything a stranger sent).
func (s *Sessions) refuse(from, why string) error {
	s.stats.refused.Add(1)
	return fmt.Errorf("%w: %.64q %s", errRefused, from, why)
}

// sender checks a request's From field against the authenticated sender.
func (s *Sessions) sender(from, claimed string) error {
	if claimed != "" && claimed != from {
		return s.refuse(from, "names another sender")
	}
	return nil
}

func (s *Sessions) serve(ctx context.Context, from, method string, body []byte) ([]byte, error) {
	if s.isClosed() {
		return nil, errPeerClosed
	}
	switch method {
	case methodPing:
		return nil, nil
	case methodApply, methodBatch:
		resp, err, _ := s.serveApply(ctx, from, method, body, true)
		return resp, err
	case methodVerify, methodTouch, methodDrop, methodTake, methodResolve, methodInvalidate, methodConfirm, methodDown:
	default:
		return nil, fmt.Errorf("replication: unknown method %.32q", method)
	}
	if !s.admit(from) {
		return nil, s.refuse(from, "is not a live member holding sessions")
	}
	switch method {
	case methodVerify:
		var req verifyReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if err := s.sender(from, req.From); err != nil {
			return nil, err
		}
		req.From = from
		if !validKey(req.Key) {
			return nil, errBadKey
		}
		s.grant(from)
		st, g := s.verifyOne(ctx, &req)
		return wire.Marshal(reply{St: st, G: g, N: int(s.nSecond.Load())})
	case methodDown:
		var req downReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if err := s.sender(from, req.From); err != nil {
			return nil, err
		}
		if req.Key != "" && !validKey(req.Key) {
			return nil, errBadKey
		}
		return wire.Marshal(downReply{Down: s.seesDown(req.Peer), Newer: s.holdsNewer(from, req.Key, req.Epoch)})
	case methodTouch:
		var req touchReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if err := s.sender(from, req.From); err != nil {
			return nil, err
		}
		s.grant(from)
		now := s.now()
		for _, k := range req.Keys {
			if e := s.lookup(k); e != nil {
				if st := e.state(); st.role == roleSecondary && st.primary == from {
					e.last.Store(now)
					e.confirmed.Store(now)
				}
			}
		}
		return wire.Marshal(reply{St: stOK, G: s.grantGen(from), N: int(s.nSecond.Load())})
	case methodDrop:
		var req dropReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if err := s.sender(from, req.From); err != nil {
			return nil, err
		}
		// A drop that is not an invalidation compares ranks with the
		// sender's own copy: it names the sender as that copy's primary.
		if !req.Gone && req.Primary != from {
			return nil, s.refuse(from, "sends a drop for another node's copy")
		}
		req.From = from
		if !validKey(req.Key) {
			return nil, errBadKey
		}
		s.dropOne(ctx, &req)
		return nil, nil
	case methodTake:
		var req takeReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if !validKey(req.Key) {
			return nil, errBadKey
		}
		if req.From == "" {
			req.From = from
		}
		if req.From != from && !s.admit(req.From) {
			// A relay (see takeOne) on behalf of a node that is not a
			// live member holding sessions.
			return nil, s.refuse(from, "relays a take for a node that is not a live member holding sessions")
		}
		r := s.takeOne(ctx, from, &req)
		r.Inc = s.inc
		return wire.Marshal(r)
	case methodResolve:
		var req resolveReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if err := s.sender(from, req.From); err != nil {
			return nil, err
		}
		out := resolveReply{St: make([]status, len(req.Items))}
		for i, it := range req.Items {
			if !validKey(it.Key) {
				return nil, fmt.Errorf("%w: resolve item %d", errBadKey, i)
			}
			if err := s.sender(from, it.Primary); err != nil {
				return nil, err
			}
			out.St[i] = s.resolveItem(ctx, from, it)
		}
		return wire.Marshal(out)
	case methodInvalidate:
		var req invalidateReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if err := s.sender(from, req.From); err != nil {
			return nil, err
		}
		if !validKey(req.Key) {
			return nil, errBadKey
		}
		s.invalidateOne(ctx, from, req.Key)
		return nil, nil
	case methodConfirm:
		var req confirmReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		if err := s.sender(from, req.From); err != nil {
			return nil, err
		}
		out := confirmReply{St: make([]status, len(req.Items)), I: s.inc}
		for i, it := range req.Items {
			out.St[i] = s.confirmItem(from, it)
		}
		return wire.Marshal(out)
	}
	return nil, nil // not reached: the first switch lists the methods
}

// errBadKey: a request's session key is malformed. The key is not
// repeated in the error, which the sender may log.
var errBadKey = fmt.Errorf("%w: malformed session key in a request", ErrInvalidID)

// maxContested bounds the names a copy lists as contested (see resolve):
// a node that failed adds one, a resolve removes it.
const maxContested = 64

func validApply(r *applyReq) error {
	if !validKey(r.Key) {
		return errBadKey
	}
	if r.Epoch == 0 {
		return errors.New("replication: apply with epoch 0")
	}
	if len(r.Contested) > maxContested {
		return fmt.Errorf("replication: apply lists %d contested nodes, at most %d", len(r.Contested), maxContested)
	}
	for _, n := range r.Contested {
		if n == "" || len(n) > maxNodeName {
			return errors.New("replication: apply lists a contested node with a malformed name")
		}
	}
	return nil
}

// maxNodeName is the longest node name: the transport's handshake
// carries at most 255 bytes.
const maxNodeName = 255

// serveApply serves an apply or a batch of them from a peer. Without
// wait it does not wait for a session's lock: it reports busy instead,
// and a batch may then have been applied in part. Serving it again is
// harmless: a change applied twice is answered as a repeat, a full copy
// replaces itself.
func (s *Sessions) serveApply(ctx context.Context, from, method string, body []byte, wait bool) (resp []byte, err error, busy bool) {
	if !s.admitGrant(from) {
		return nil, s.refuse(from, "is not a live member holding sessions"), false
	}
	if method == methodApply {
		var req applyReq
		if err := wire.Unmarshal(body, &req); err != nil {
			return nil, err, false
		}
		if err := s.sender(from, req.From); err != nil {
			return nil, err, false
		}
		req.From = from
		if err := validApply(&req); err != nil {
			return nil, err, false
		}
		st, g, ok := s.applyOne(ctx, &req, wait)
		if !ok {
			return nil, nil, true
		}
		resp, err := wire.Marshal(reply{St: st, G: g, N: int(s.nSecond.Load())})
		return resp, err, false
	}
	var req batchReq
	if err := wire.Unmarshal(body, &req); err != nil {
		return nil, err, false
	}
	if err := s.sender(from, req.From); err != nil {
		return nil, err, false
	}
	for i := range req.Items {
		it := &req.Items[i]
		if err := s.sender(from, it.From); err != nil {
			return nil, err, false
		}
		it.From = from
		if err := validApply(it); err != nil {
			return nil, err, false
		}
	}
	out := batchReply{St: make([]status, len(req.Items)), G: make([]uint64, len(req.Items))}
	for i := range req.Items {
		var ok bool
		if out.St[i], out.G[i], ok = s.applyOne(ctx, &req.Items[i], wait); !ok {
			return nil, nil, true
		}
	}
	out.N = int(s.nSecond.Load())
	resp, err = wire.Marshal(out)
	return resp, err, false
}

// applyOne applies a change or a full copy to this node's secondary copy
// and returns the outcome with the lease generation for the sender, read
// under the copy's lock so that it cannot be newer than a takeover of this
// very copy. Without wait, it reports ok == false, having done nothing,
// when the copy's lock is taken.
func (s *Sessions) applyOne(ctx context.Context, req *applyReq, wait bool) (st status, gen uint64, ok bool) {
	for range 3 {
		if s.tomb.has(req.Key) {
			return stGone, s.grantGen(req.From), true
		}
		e := s.lookup(req.Key)
		if e == nil {
			if !req.Full && s.moved.has(req.Key) {
				// As in verifyOne: the session moved on from the copy we
				// held, so the sender's is from before; it must not be
				// copied back here in full after this change.
				return stStale, s.grantGen(req.From), true
			}
			if !req.Full {
				return stGap, s.grantGen(req.From), true
			}
			if req.Set.size() > s.opts.MaxSessionSize {
				s.stats.refused.Add(1)
				return stTooLarge, s.grantGen(req.From), true
			}
			var err error
			if e, err = s.insert(newEntry(req.Key, s.now())); err != nil {
				return stBusy, s.grantGen(req.From), true
			}
		}
		if !wait {
			if !e.tryLock() {
				return 0, 0, false
			}
		} else if err := e.lockWithin(ctx, s.handlerWait()); err != nil {
			return stBusy, s.grantGen(req.From), true
		}
		st, ok, g := s.applyLocked(e, req)
		e.unlock()
		if ok {
			return st, g, true
		}
		// The entry was dropped while we waited for it: look again.
	}
	return stBusy, s.grantGen(req.From), true
}

func (s *Sessions) applyLocked(e *entry, req *applyReq) (status, bool, uint64) {
	g := s.grantGen(req.From)
	e.mu.Lock()
	st, dead := e.st, e.dead
	e.mu.Unlock()
	if dead {
		return 0, false, g
	}
	theirs := rank{req.Epoch, req.Members, req.From}
	same := st.role == roleSecondary && st.primary == req.From && st.epoch == req.Epoch
	if st.role != roleNone && !same {
		if st.outranks(theirs) {
			return stStale, true, g
		}
		if !req.Full {
			return stGap, true, g
		}
	}
	if st.role == roleNone && !req.Full {
		return stGap, true, g
	}
	var next state
	if req.Full && st.role == rolePrimary && s.opts.Mode == ModeSync && req.Version < st.version {
		// Ours ranks lower but holds writes the sender's copy lacks, and
		// in ModeSync a primary's version holds only acknowledged writes:
		// the sender's copy forked from an older point (a copy kept for
		// a new primary that never installed it, promoted while ours was
		// promoted by failover). Ours wins, whatever the ranks say.
		return stStale, true, g
	}
	if req.Full {
		if req.Set.size() > s.opts.MaxSessionSize {
			s.stats.refused.Add(1)
			return stTooLarge, true, g
		}
		attrs := req.Set
		next = state{
			role: roleSecondary, epoch: req.Epoch, members: req.Members, version: req.Version,
			attrs: attrs, size: attrs.size(), primary: req.From, contested: req.Contested,
			primaryInc: req.Inc, provisional: !same,
		}
		if st.role == rolePrimary {
			// A copy that ranks higher than ours exists: ours is demoted.
			s.stats.staleDrops.Add(1)
			s.log.Debug("demoted a session copy to secondary", "session", keyRef(e.key), "new_primary", req.From,
				"epoch", st.epoch, "members", st.members, "their_epoch", req.Epoch, "their_members", req.Members)
			if st.secondary != "" && st.secondary != req.From {
				// Captures copies, not st, which would then live on the
				// heap on every apply.
				secondary, r := st.secondary, st.rank()
				s.spawn(func() { s.sendDrop(secondary, e.key, r, false) })
			}
		}
	} else {
		if st.version >= req.Version {
			return stOK, true, g // a repeat
		}
		if st.version != req.Base {
			return stGap, true, g
		}
		next = st
		next.provisional = false // the primary sends changes only to its secondary
		next.attrs = st.attrs.with(req.Set, req.Del)
		next.size = next.attrs.size()
		if next.size > s.opts.MaxSessionSize {
			s.stats.refused.Add(1)
			return stTooLarge, true, g
		}
		next.version = req.Version
	}
	next.kept = nil
	if !s.publish(e, next) {
		return 0, false, g
	}
	if req.Full {
		s.moved.forget(e.key) // the session is here again
	}
	now := s.now()
	e.last.Store(now)
	e.confirmed.Store(now)
	return stOK, true, g
}

// verifyOne answers whether this node still holds the sender's copy at
// its epoch as the secondary.
func (s *Sessions) verifyOne(ctx context.Context, req *verifyReq) (status, uint64) {
	e := s.lookup(req.Key)
	if e == nil {
		switch {
		case s.tomb.has(req.Key):
			return stGone, s.grantGen(req.From)
		case s.moved.has(req.Key):
			// The session moved on from the copy we held (we handed it
			// over, or its new primary dropped ours): the sender's copy
			// is from before, and must not be copied back here.
			return stStale, s.grantGen(req.From)
		}
		// Never held, or lost in a restart: the sender copies it again.
		return stUnknown, s.grantGen(req.From)
	}
	if err := e.lockWithin(ctx, s.handlerWait()); err != nil {
		return stBusy, s.grantGen(req.From)
	}
	defer e.unlock()
	g := s.grantGen(req.From)
	st := e.state()
	switch {
	case st.role == roleSecondary && st.primary == req.From && st.epoch == req.Epoch:
		e.last.Store(s.now())
		e.confirmed.Store(s.now())
		if st.pending() || st.provisional {
			st.kept, st.provisional = nil, false
			s.publish(e, st)
		}
		return stOK, g
	case st.role != roleNone && st.outranks(rank{req.Epoch, req.Members, req.From}):
		return stStale, g
	}
	return stUnknown, g
}

// confirmItem answers whether from is the secondary of our copy of a
// session at that epoch.
func (s *Sessions) confirmItem(from string, it rankWire) status {
	e := s.lookup(it.Key)
	if e == nil {
		if s.tomb.has(it.Key) {
			return stGone
		}
		return stUnknown
	}
	st := e.state()
	switch {
	case st.role == rolePrimary && st.secondary == from && st.epoch == it.Epoch:
		return stOK
	case st.role == roleNone:
		return stBusy // being installed or dropped: the asker keeps its copy and asks again
	case st.standing().epoch > it.Epoch, st.role == rolePrimary && st.epoch == it.Epoch:
		// The session moved on from the asker's copy, or this primary
		// counts on another secondary: the asker's copy is an orphan.
		return stStale
	}
	// Ours is no newer (a copy we kept for a handover weighs what it was
	// before it): the asker's copy may be the one the session lives on
	// in. It was answered "stale" and dropped, and the last copy of a
	// session with it.
	return stBusy
}

// dropOne removes a secondary copy that ranks no higher than the
// request's, or, for an invalidation, any copy.
func (s *Sessions) dropOne(ctx context.Context, req *dropReq) {
	if req.Gone {
		s.tomb.add(req.Key, s.tombTTL())
	}
	e := s.lookup(req.Key)
	if e == nil {
		return
	}
	st := e.state()
	if req.Gone {
		s.drop(e, "drop request: invalidated")
		s.stats.invalidated.Add(1)
		if st.role == rolePrimary && st.secondary != "" && st.secondary != req.From {
			s.spawn(func() { s.sendDrop(st.secondary, req.Key, st.rank(), true) })
		}
		return
	}
	if st.role == roleSecondary && !st.outranks(rank{req.Epoch, req.Members, req.Primary}) {
		if s.dropIfIdle(ctx, e, st, "drop request") {
			s.movedTo(req.Key, req.From)
		}
	}
}

func (s *Sessions) invalidateOne(ctx context.Context, from, key string) {
	s.tomb.add(key, s.tombTTL())
	e := s.lookup(key)
	if e == nil {
		return
	}
	st := e.state()
	s.drop(e, "invalidate request")
	s.stats.invalidated.Add(1)
	partner := st.secondary
	if st.role == roleSecondary {
		partner = st.primary
	}
	if partner != "" && partner != from && partner != s.self {
		ctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
		defer cancel()
		req := dropReq{From: s.self, Key: key, Gone: true}
		if _, err := s.call(ctx, partner, methodDrop, req, nil); err != nil {
			s.log.Debug("invalidation not forwarded", "peer", partner, "err", err)
		}
	}
}

// takeOne hands a session over to req.From, which becomes its primary.
// This node's copy becomes a secondary copy of the new primary's, at the
// next epoch, until the new primary confirms or drops it: if the answer
// is lost, the session is still here.
//
// The new primary is the sender (from), except in a relay: a node asked
// for a session it backs as secondary asks the primary to hand it over
// on the asker's behalf, and the request names the asker. A relayed take
// is served only by the primary copy whose secondary is the sender (the
// only node that relays to it), and never relayed further; otherwise it
// is answered busy and the asker asks another node. A relay lets the
// secondary hand a session to a live member that holds sessions and
// could have taken it itself: it gains the relaying node nothing.
func (s *Sessions) takeOne(ctx context.Context, from string, req *takeReq) takeReply {
	relayed := req.From != from
	if s.tomb.has(req.Key) {
		return takeReply{St: stGone}
	}
	s.mu.RLock()
	_, acquiring := s.mu.taking[req.Key]
	s.mu.RUnlock()
	if acquiring {
		// This node is taking the session over itself right now, and
		// may hold no copy until the answer comes: "unknown" would tell
		// a node holding the copy we are being handed that we never
		// installed it, and it would promote that copy beside ours. The
		// caller asks again shortly.
		return takeReply{St: stBusy}
	}
	e := s.lookup(req.Key)
	if e == nil {
		moved, _ := s.moved.get(req.Key)
		return takeReply{St: stUnknown, Moved: moved}
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	e.mu.Lock()
	st, dead := e.st, e.dead
	e.mu.Unlock()
	if st.role == roleNone && !dead {
		// Being installed: its copy is about to change.
		return takeReply{St: stBusy}
	}
	if relayed && st.role == roleSecondary && st.pending() && st.primary == req.From {
		// We hold the copy we handed to the asker, which never installed
		// it: that is the session, and the asker is to take it from us.
		// (The relaying node's copy is older than ours; it may drop it.)
		return takeReply{St: stUnknown, Moved: s.self}
	}
	if relayed && (st.role != rolePrimary || st.secondary != from) {
		return takeReply{St: stBusy}
	}
	if !s.quorum() {
		// As in acquire: on the minority side nothing changes hands.
		return takeReply{St: stBusy}
	}
	switch st.role {
	case rolePrimary:
		if _, err := s.check(ctx, e, true, false); err != nil {
			if errors.Is(err, errGoneCopy) {
				return takeReply{St: stGone}
			}
			if _, ok := errors.AsType[*droppedError](err); ok {
				return takeReply{St: stUnknown}
			}
			return takeReply{St: stBusy}
		}
		return s.handOver(ctx, e, st, req.From, req.Inc, false)
	case roleSecondary:
		p := st.primary
		if p == req.From && req.Inc == st.primaryInc && !st.pending() {
			// Our primary asks for its own session back, so it holds no
			// newer copy: it handed the session on, or found a newer
			// copy elsewhere. Ours is an orphan of that lineage, and
			// handing it back would start a second one beside the
			// session.
			moved, _ := s.moved.get(req.Key)
			return takeReply{St: stUnknown, Moved: moved}
		}
		contest := p != req.From
		if contest && s.isAlive(p) && !slices.Contains(req.Unreachable, p) {
			// The primary is the one to hand it over; ask it to, on
			// the caller's behalf, and pass its answer on.
			var r takeReply
			_, err := s.call(ctx, p, methodTake, takeReq{From: req.From, Inc: req.Inc, Key: req.Key, Unreachable: req.Unreachable}, &r)
			if err == nil {
				switch r.St {
				case stOK:
					return s.relay(ctx, e, st, p, &r)
				case stGone:
					s.drop(e, "take: the primary says invalidated")
					s.tomb.add(req.Key, s.tombTTL())
					return r
				case stBusy:
					return r
				}
				// The primary holds no copy.
				if neverInstalled(st, &r) {
					// It never installed the session, or restarted and
					// lost it: ours is the session.
					contest = false
				} else {
					// It moved on: ours is an orphan. Point the caller
					// where the session went, if the primary knows.
					if s.dropIfIdle(ctx, e, st, "take: orphan, the primary moved on") {
						s.movedTo(req.Key, r.Moved)
						return takeReply{St: stUnknown, Moved: r.Moved}
					}
					return takeReply{St: stBusy} // it changed meanwhile: ask again
				}
			} else if ctx.Err() != nil {
				return takeReply{St: stBusy}
			}
		}
		if contest && unconfirmed(st) {
			// Its primary cannot vouch for our copy, and it may not be
			// the one it counted on: it may have put another secondary
			// in place, which holds the session now. Handing ours over
			// could serve an old state. This node settles it as a
			// request here would (acquire asks every node first); the
			// caller asks again meanwhile.
			s.settleUnconfirmed(req.Key)
			return takeReply{St: stBusy}
		}
		return s.handOver(ctx, e, st, req.From, req.Inc, contest)
	}
	return takeReply{St: stUnknown}
}

// settleUnconfirmed takes the session over here in the background, as a
// request for it would, unless an acquisition of it is under way: so
// that a copy whose primary is gone, and which a peer asked for but we
// would not hand over, becomes the session or is found an orphan.
func (s *Sessions) settleUnconfirmed(key string) {
	s.mu.RLock()
	_, busy := s.mu.taking[key]
	s.mu.RUnlock()
	if busy {
		return
	}
	s.spawn(func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
		defer cancel()
		if _, err := s.get(ctx, ID{Key: key}); err != nil {
			s.log.Debug("could not settle a copy its primary never confirmed", "session", keyRef(key), "err", err)
		}
	})
}

// neverInstalled reports whether st, a secondary copy, is the session
// although its primary answered a take that it holds no copy: the
// primary restarted since it made ours (another incarnation), or ours is
// the copy kept for a new primary that never installed it (pending).
func neverInstalled(st state, r *takeReply) bool {
	return r.Inc != st.primaryInc || st.pending()
}

// handOver gives e's state to newPrimary and keeps e as a pending
// secondary copy of newPrimary's at the next epoch, provided e is still
// the copy seen describes. For a secondary copy whose primary may still
// serve it (contest), the lease we granted that primary runs out first.
func (s *Sessions) handOver(ctx context.Context, e *entry, seen state, newPrimary string, newInc uint64, contest bool) takeReply {
	if err := e.lockWithin(ctx, s.handlerWait()); err != nil {
		return takeReply{St: stBusy}
	}
	defer e.unlock()
	st := e.state()
	if st.role != seen.role || st.epoch != seen.epoch || st.primary != seen.primary {
		return takeReply{St: stBusy} // it changed since the caller's request looked
	}
	want, oldPrimary := st.role, st.primary
	if want == roleSecondary && contest {
		// The primary may still serve its copy: only if it is gone for
		// sure, and once the lease we granted it has run out (at once
		// when its process answered that it serves nothing).
		ok, dead := s.mayTakeFrom(ctx, oldPrimary, e.key, st.epoch+1)
		if !ok {
			return takeReply{St: stBusy}
		}
		if err := s.release(ctx, oldPrimary, dead); err != nil {
			return takeReply{St: stBusy}
		}
	}
	out := takeReply{
		St:        stOK,
		Epoch:     st.epoch + 1,
		Since:     st.standing().epoch,
		Members:   s.liveCount(),
		Version:   st.version,
		Attrs:     st.attrs.toMap(),
		Contested: st.contested,
		Kept:      s.self,
	}
	switch {
	case want == rolePrimary:
		out.Secondary = st.secondary
	case st.pending():
		// A copy we kept for a new primary that never installed it: the
		// old lineage's secondary may have promoted its copy since, so
		// the taker must reach it (see install), as from a primary.
		out.Secondary = st.kept.oldSecondary
	}
	if contest {
		out.Contested = withName(out.Contested, oldPrimary)
	}
	if out.Secondary == newPrimary {
		out.Secondary = ""
	}
	next := st
	next.role = roleSecondary
	next.primary = newPrimary
	next.primaryInc = newInc
	kept := handover{handedFrom: st.rank(), oldSecondary: out.Secondary}
	if st.kept != nil {
		kept.handedFrom = st.kept.handedFrom // a kept copy handed over again keeps it
	}
	next.kept = &kept
	next.secondary = ""
	next.epoch = out.Epoch
	next.members = out.Members
	next.contested = out.Contested
	s.movedTo(e.key, newPrimary)
	if s.publish(e, next) {
		s.log.Debug("handed a session over", "session", keyRef(e.key), "to", newPrimary, "epoch", out.Epoch)
	}
	return out
}

// relay passes on what the primary handed over to the caller. The
// primary kept a copy in the caller's lineage (r.Kept), which the caller
// drops unless it makes the primary its secondary; our own copy is no
// longer needed.
func (s *Sessions) relay(ctx context.Context, e *entry, st state, primary string, r *takeReply) takeReply {
	s.dropIfIdle(ctx, e, st, "relay: the primary handed it over")
	s.movedTo(e.key, primary)
	if r.Secondary == s.self {
		r.Secondary = "" // that was us: dropped
	}
	return *r
}

// resolveItem compares the caller's copy of a session with ours: the
// higher rank wins; ours is dropped if it loses.
func (s *Sessions) resolveItem(ctx context.Context, from string, it rankWire) status {
	e := s.lookup(it.Key)
	if e == nil {
		return stOK
	}
	if err := e.lockWithin(ctx, s.handlerWait()); err != nil {
		return stBusy
	}
	defer e.unlock()
	st := e.state()
	theirs := rank{it.Epoch, it.Members, from}
	switch {
	case st.role == roleNone:
		return stOK
	case st.primary == from && st.epoch == it.Epoch:
		return stOK // its own lineage: we are its secondary
	case st.outranks(theirs):
		return stStale
	}
	if st.role == rolePrimary {
		s.dropStale(e, st)
	} else {
		s.drop(e, "resolve: the caller copy wins")
	}
	s.movedTo(it.Key, from)
	return stOK
}
