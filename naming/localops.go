package naming

import (
	"fmt"
	"time"
)

// Local operations: Bind, Rebind and Unbind as the core applies them, and
// the gossip and beacons they send. The errors a caller gets
// (ErrNameBound, ErrNotFound, ErrTooLarge) are decided here, from this
// node's copy, because no peer answers a plain Bind: peers apply what
// they receive or drop it. A change is applied to the local copy before
// it is sent, so the caller reads its own write at once.

type opKind int

const (
	opBind opKind = iota
	opRebind
	opUnbind
)

func (c *core) local(kind opKind, name string, value []byte, bo bindOptions) error {
	self := c.owners[c.self]
	mine := self.recs[name]
	var cur *entry
	var cl *crec
	if idx := c.names[name]; idx != nil {
		cur = idx.cur
		if idx.c != nil && !idx.c.deleted {
			cl = idx.c
		}
	}
	if kind == opUnbind {
		switch {
		case mine != nil:
			c.localDelete(mine)
		case cl != nil:
			c.clusterWrite(name, nil, cl, true)
		default:
			return fmt.Errorf("%w: %q is not bound by this node", ErrNotFound, name)
		}
		return nil
	}
	size := recSize(name, value)
	if bo.scope == ClusterScope {
		switch {
		case mine != nil:
			return fmt.Errorf("%w: %q is bound with node scope by this node", ErrNameBound, name)
		case cur != nil && cur.b.Scope != ClusterScope:
			return fmt.Errorf("%w: %q is bound with node scope by %s", ErrNameBound, name, cur.b.Offers[0].Node)
		case cl != nil && kind == opBind:
			return fmt.Errorf("%w: %q is bound with cluster scope (Rebind replaces it)", ErrNameBound, name)
		}
		n := 1
		old := c.cbucket[bucketOf(name)][name]
		if old != nil {
			n, size = 0, size-recSize(old.name, old.value)
		}
		if mn, mb := c.crecCharge(c.self, name, value, old); !c.quota(c.self, n, size, mn, mb) {
			return c.overQuota()
		}
		if !c.room(n, size) {
			return c.tooLarge()
		}
		c.clusterWrite(name, value, cl, false)
		return nil
	}
	switch {
	case cur != nil && cur.b.Scope == ClusterScope:
		return fmt.Errorf("%w: %q is bound with cluster scope", ErrNameBound, name)
	case mine != nil && kind == opBind:
		return fmt.Errorf("%w: %q is already bound by this node (Rebind replaces it)", ErrNameBound, name)
	case cur != nil:
		for _, of := range cur.b.Offers {
			if of.Node != c.self && !(bo.clusterable && cur.b.Clusterable) {
				if cur.b.Clusterable {
					return fmt.Errorf("%w: %q is clusterable; bind it with Clusterable() to add an offer", ErrNameBound, name)
				}
				return fmt.Errorf("%w: %q is bound by %s", ErrNameBound, name, of.Node)
			}
		}
	}
	n := 1
	if mine != nil {
		n, size = 0, size-recSize(mine.name, mine.value)
	}
	if !c.quota(c.self, n, size, n, size) {
		return c.overQuota()
	}
	if !c.room(n, size) {
		return c.tooLarge()
	}
	ts := c.clock.Now()
	born := ts
	if mine != nil {
		born = mine.born
	}
	self.max++
	self.ver = self.max
	r := &rec{name: name, owner: c.self, ver: self.max, born: born, ts: ts, value: value}
	if bo.clusterable {
		r.flags |= flagClusterable
	}
	delete(self.tombs, name)
	c.putRec(self, r, mine)
	c.sendChange(recWire{N: name, V: r.ver, B: born, T: ts, F: r.flags, X: value})
	return nil
}

func (c *core) tooLarge() error {
	return fmt.Errorf("%w: the tree holds %d records and %d bytes; MaxBindings is %d and MaxTreeBytes %d",
		ErrTooLarge, c.nrecs, c.nbytes, c.opts.MaxBindings, c.opts.MaxTreeBytes)
}

func (c *core) overQuota() error {
	u := c.usage[c.self]
	return fmt.Errorf("%w: this node holds %d records and %d bytes; MaxMemberBindings is %d and MaxMemberBytes %d",
		ErrQuota, u.n, u.b, c.opts.MaxMemberBindings, c.opts.MaxMemberBytes)
}

// localDelete unbinds this node's record r.
func (c *core) localDelete(r *rec) {
	self := c.owners[c.self]
	self.max++
	self.ver = self.max
	c.delRec(self, r)
	c.addTomb(self, r.name, self.max)
	c.sendChange(recWire{N: r.name, V: self.max, T: c.clock.Now(), D: true})
}

// clusterWrite writes (or with deleted, tombstones) a cluster-scoped
// record; born 0 starts a new lineage.
func (c *core) clusterWrite(name string, value []byte, lineage *crec, deleted bool) {
	ts := c.clock.Now()
	born, creator := ts, c.self
	if lineage != nil {
		born, creator = lineage.born, lineage.creator
	}
	w := crecWire{N: name, W: c.self, O: creator, B: born, T: ts, X: value, D: deleted}
	c.applyCrec(&w)
	raw, err := encodeMsg(msgClust, clustMsg{R: w})
	if err == nil && len(raw) > c.maxBroadcast {
		w.X, w.Big = nil, true
		raw, err = encodeMsg(msgClust, clustMsg{R: w})
	}
	c.broadcast("c/"+name, raw, err)
}

func (c *core) sendChange(w recWire) {
	raw, err := encodeMsg(msgChange, changeMsg{I: c.inc, R: w})
	if err == nil && len(raw) > c.maxBroadcast {
		w.X, w.Big = nil, true
		raw, err = encodeMsg(msgChange, changeMsg{I: c.inc, R: w})
	}
	c.broadcast("o/"+w.N, raw, err)
}

func (c *core) broadcast(key string, raw []byte, err error) {
	if err != nil {
		c.log.Error("encode broadcast", "err", err)
		return
	}
	c.out = append(c.out, outMsg{key: key, raw: raw})
	now := c.now()
	if c.beaconDue.IsZero() {
		c.beaconFirst = now
	}
	c.beaconDue = minTime(now.Add(beaconQuiet), c.beaconFirst.Add(beaconMaxDelay))
}

// Beacons: after a burst of local changes the tree gossips its version and
// hashes, once when the burst is quiet (or at least every beaconMaxDelay)
// and again beaconAgain later, so that peers that lost a change notice
// within a second or two instead of waiting for the next push/pull.
const (
	beaconQuiet    = 250 * time.Millisecond
	beaconMaxDelay = time.Second
	beaconAgain    = 2 * time.Second
)

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (c *core) direct(to string, t msgType, body any) {
	raw, err := encodeMsg(t, body)
	if err != nil {
		c.log.Error("encode message", "type", t, "err", err)
		return
	}
	c.out = append(c.out, outMsg{to: to, raw: raw})
}
