package naming

import (
	"fmt"
	"slices"
	"time"
)

// A confirmed Bind (the Confirmed option) is applied locally as any Bind,
// then sent directly to every live member, which applies it and answers
// with the record that comes first for the name in its copy. Two nodes
// that bind one name at the same moment each ask the other, and each
// answers with a copy that holds both records, so both learn the same
// winner; a node that binds later sees an earlier binding already and
// fails locally with ErrNameBound. The Bind returns when every member
// asked has answered or left.

// A confirmed Unbind sends the tombstone the same way and returns once
// every live member has applied it: after it, no member shows the
// binding, so whoever binds the name next is told it is free.

// confirm is one confirmed Bind or Unbind waiting for answers.
type confirm struct {
	name string
	born uint64
	// unbind: the tombstone at version ver is confirmed, not a binding.
	unbind bool
	ver    uint64
	done   chan error
	// waiting maps each member still to answer to when to ask it again.
	waiting map[string]time.Time
	// heard holds each answer's first record, by answering member; the
	// winner is the least of them whose node is still alive (and this
	// node's own record, while it lasts).
	heard   map[string]answer
	started time.Time
}

// answer is one member's answer to a confirmation: the record that comes
// first for the name in its copy (node "" when it shows none).
type answer struct {
	candidate
	// nodeScoped: the record is a node-scoped one, which only its node
	// makes: its node's own answer says whether it still holds it.
	nodeScoped bool
}

// Retry intervals of a confirmation: a member that has not answered is
// asked again after confirmRetry; one whose copy did not take the record
// yet (it had not accepted this node, or the record was behind another),
// after confirmNotSeen. After confirmTimeout the Bind fails.
const (
	confirmRetry   = time.Second
	confirmNotSeen = 100 * time.Millisecond
	confirmTimeout = 30 * time.Second
)

// startConfirm begins confirming, for the operation whose reply channel
// is done, who holds name. If this node holds it (a Bind just made it),
// the members are sent the record; otherwise another node's binding
// refused the Bind here, and the members are only asked, so that the
// answer names the binding that wins everywhere, not merely the one that
// reached this copy first. members are the live members as membership
// knows them now (the core's own view follows member events and may lag).
func (c *core) startConfirm(name string, members []string, done chan error) {
	c.nextReq++
	now := c.now()
	cf := &confirm{name: name, done: done, waiting: map[string]time.Time{}, heard: map[string]answer{}, started: now}
	msg := confirmMsg{Q: c.nextReq, I: c.inc}
	if r := c.owners[c.self].recs[name]; r != nil {
		cf.born = r.born
		msg.R = recWire{N: name, V: r.ver, B: r.born, T: r.ts, F: r.flags, X: r.value}
	} else {
		msg.R = recWire{N: name}
		msg.Ask = true
	}
	c.sendConfirm(cf, msg, members)
}

// startConfirmUnbind begins confirming this node's Unbind of name, which
// left the tombstone at version ver.
func (c *core) startConfirmUnbind(name string, ver uint64, members []string, done chan error) {
	c.nextReq++
	cf := &confirm{name: name, unbind: true, ver: ver, done: done, waiting: map[string]time.Time{}, heard: map[string]answer{}, started: c.now()}
	c.sendConfirm(cf, confirmMsg{Q: c.nextReq, I: c.inc, R: cf.tomb()}, members)
}

// tomb is the record of a confirmed Unbind.
func (cf *confirm) tomb() recWire { return recWire{N: cf.name, V: cf.ver, D: true} }

// sendConfirm registers cf as request c.nextReq and sends msg to members
// and to every member this copy knows to be live.
func (c *core) sendConfirm(cf *confirm, msg confirmMsg, members []string) {
	now := c.now()
	for _, m := range members {
		if _, gone := c.departed[m]; m != c.self && !gone {
			cf.waiting[m] = now.Add(confirmRetry)
		}
	}
	for m := range c.live {
		if m != c.self {
			cf.waiting[m] = now.Add(confirmRetry)
		}
	}
	c.confirms[c.nextReq] = cf
	// One encoding for every member: this is on the Bind's critical path.
	raw, err := encodeMsg(msgConfirm, msg)
	if err != nil {
		c.log.Error("encode message", "type", msgConfirm, "err", err)
	}
	for m := range cf.waiting {
		if raw != nil {
			c.out = append(c.out, outMsg{to: m, raw: raw})
		}
	}
	c.settleConfirm(c.nextReq, cf)
}

// first returns the record that comes first for name in this copy (node
// "" when there is none).
func (c *core) first(name string) candidate {
	idx := c.names[name]
	if idx == nil {
		return candidate{}
	}
	var cands []candidate
	for _, r := range idx.recs {
		cands = append(cands, candidate{born: r.born, node: r.owner, r: r})
	}
	if idx.c != nil && !idx.c.deleted {
		cands = append(cands, candidate{born: idx.c.born, node: idx.c.writer, c: idx.c})
	}
	if len(cands) == 0 {
		return candidate{}
	}
	return slices.MinFunc(cands, candCmp)
}

// heldByOther reports whether name shows another node's binding here.
func (c *core) heldByOther(name string) bool {
	idx := c.names[name]
	return idx != nil && idx.cur != nil && idx.cur.b.Offers[0].Node != c.self
}

// onConfirm applies a peer's record (unless it only asks) and answers
// with the name's first record here.
func (c *core) onConfirm(from string, m *confirmMsg) {
	if !m.Ask {
		c.onChange(from, &changeMsg{I: m.I, R: m.R})
	}
	ack := confirmAckMsg{Q: m.Q, N: m.R.N, S: m.Ask, I: c.inc}
	first := c.first(m.R.N)
	switch idx := c.names[m.R.N]; {
	case m.Ask:
	case m.R.D:
		// An Unbind: seen once the sender's record is gone here.
		ack.S = true
		if o := c.owners[from]; o != nil && o.recs[m.R.N] != nil {
			ack.S = false
		}
	case idx != nil:
		for _, r := range idx.recs {
			if r.owner == from && r.born == m.R.B {
				ack.S = true
			}
		}
	}
	ack.W, ack.B = first.node, first.born
	if r := first.r; r != nil && r.owner != from {
		if o := c.owners[r.owner]; o != nil {
			ack.WI = o.inc
			ack.WR = &recWire{N: r.name, V: r.ver, B: r.born, T: r.ts, F: r.flags, X: r.value}
		}
	}
	c.direct(from, msgConfirmAck, ack)
}

func (c *core) onConfirmAck(from string, m *confirmAckMsg) {
	cf := c.confirms[m.Q]
	if cf == nil || cf.name != m.N {
		c.stats.stale.Add(1)
		return
	}
	if _, ok := cf.waiting[from]; !ok {
		return // a repeated answer
	}
	if o := c.owners[from]; o != nil && m.I > o.inc && c.accept(from, m.I) {
		// The member restarted since the records we hold of it (no
		// failure was seen in between): they are gone with the old
		// incarnation, here too. Fetch what the new one holds.
		c.ownerAt(from, m.I)
		c.requestOwner(from, false)
	}
	if m.WR != nil && m.W != c.self && m.WR.N == m.N {
		// The winner's record, so that this copy shows it at once.
		c.onChange(m.W, &changeMsg{I: m.WI, R: *m.WR})
	}
	if !m.S {
		cf.waiting[from] = c.now().Add(confirmNotSeen)
		return
	}
	delete(cf.waiting, from)
	cf.heard[from] = answer{candidate: candidate{born: m.B, node: m.W}, nodeScoped: m.WR != nil}
	c.settleConfirm(m.Q, cf)
}

// settleConfirm answers cf once no member is left to answer.
func (c *core) settleConfirm(q uint64, cf *confirm) {
	if len(cf.waiting) > 0 {
		return
	}
	delete(c.confirms, q)
	if cf.unbind {
		c.answers = append(c.answers, reply{done: cf.done})
		return
	}
	mine := c.owners[c.self].recs[cf.name]
	var best candidate
	if mine != nil && cf.born != 0 && mine.born == cf.born {
		best = candidate{born: mine.born, node: c.self}
	}
	for _, w := range cf.heard {
		if w.node == "" || w.node == c.self {
			continue // our own record counts only while it lasts (above)
		}
		if cf.heldNoLonger(w) {
			// A stale copy's, from a member that missed the node's
			// unbind (say, across a cut) or its restart.
			c.disown(cf.name, w.candidate)
			continue
		}
		if _, gone := c.departed[w.node]; !gone && (best.node == "" || candCmp(w.candidate, best) < 0) {
			best = w.candidate
		}
	}
	// This copy may show such a record too, first: it would answer Pins.
	for range len(cf.heard) {
		f := c.first(cf.name)
		if f.r == nil || f.node == c.self || !cf.heldNoLonger(answer{f, true}) {
			break
		}
		c.disown(cf.name, f)
	}
	var err error
	switch {
	case best.node == "":
		err = fmt.Errorf("%w: %q was unbound meanwhile; bind again", ErrNameBound, cf.name)
	case best.node != c.self:
		err = &BoundError{Name: cf.name, Node: best.node, Claimed: best.born}
	}

	c.log.Debug("binding confirmed", "name", cf.name, "winner", best.node, "born", best.born, "answers", len(cf.heard))
	c.answers = append(c.answers, reply{done: cf.done, err: err})
}

// heldNoLonger reports whether w's node answered too, and w would come
// first there if that node still held it: it does not.
func (cf *confirm) heldNoLonger(w answer) bool {
	own, ok := cf.heard[w.node]
	if !ok || own.candidate == w.candidate {
		return false
	}
	if own.node == "" {
		return w.nodeScoped // a cluster-scoped value outlives its writer
	}
	return candCmp(w.candidate, own.candidate) < 0
}

// disown drops from this copy name's record that cand names, which its
// own node answered it does not hold. Until what replaced it reached this
// copy, it would show here, first, being older: Pins would answer with
// it. The owner's records are fetched whole, which brings back anything
// dropped by mistake (an answer from before a new bind of the record).
func (c *core) disown(name string, cand candidate) {
	o := c.owners[cand.node]
	if o == nil {
		return
	}
	if r := o.recs[name]; r != nil && r.born == cand.born {
		c.log.Debug("dropped a record its owner no longer holds", "name", name, "owner", cand.node)
		c.delRec(o, r)
		c.requestOwner(cand.node, true)
	}
}

// confirmMemberGone stops waiting for a member that left or failed.
func (c *core) confirmMemberGone(name string) {
	for q, cf := range c.confirms {
		if _, ok := cf.waiting[name]; ok {
			delete(cf.waiting, name)
			c.settleConfirm(q, cf)
		}
	}
}

// confirmTick asks again the members that have not answered, and gives
// up on confirmations that took too long.
func (c *core) confirmTick(now time.Time) {
	for q, cf := range c.confirms {
		if now.Sub(cf.started) > confirmTimeout {
			delete(c.confirms, q)
			c.answers = append(c.answers, reply{done: cf.done,
				err: fmt.Errorf("naming: %s of %q not confirmed by %d members within %s", cf.what(), cf.name, len(cf.waiting), confirmTimeout)})
			continue
		}
		r := c.owners[c.self].recs[cf.name]
		for m, at := range cf.waiting {
			if now.Before(at) {
				continue
			}
			cf.waiting[m] = now.Add(confirmRetry)
			if cf.unbind {
				c.direct(m, msgConfirm, confirmMsg{Q: q, I: c.inc, R: cf.tomb()})
			} else if r == nil || r.born != cf.born {
				// Only asking, or this node's record is gone (it lost, or was
				// unbound): ask who holds the name.
				c.direct(m, msgConfirm, confirmMsg{Q: q, I: c.inc, R: recWire{N: cf.name}, Ask: true})
			} else {
				c.direct(m, msgConfirm, confirmMsg{Q: q, I: c.inc, R: recWire{N: r.name, V: r.ver, B: r.born, T: r.ts, F: r.flags, X: r.value}})
			}
		}
		c.settleConfirm(q, cf)
	}
}

// what names the operation, for errors.
func (cf *confirm) what() string {
	if cf.unbind {
		return "unbinding"
	}
	return "binding"
}
