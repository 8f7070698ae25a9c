package naming

import "slices"

// The core's record bookkeeping: storing and removing an owner's
// node-scoped records and the cluster-scoped records of each bucket,
// deciding which incoming records to accept, and keeping the counts, sizes
// and hashes in step. Every change to the records goes through these
// functions so that the hashes the digests compare and the MaxBindings
// and MaxTreeBytes limits cannot drift from what is stored; each also
// marks the name dirty, which is how the visible tree (view.go) learns
// what to rebuild.

func (c *core) markDirty(name string) {
	if _, ok := c.dirty[name]; !ok {
		c.dirty[name] = struct{}{}
		c.dirtyOrder = append(c.dirtyOrder, name)
	}
}

func (c *core) index(name string) *nameIdx {
	idx := c.names[name]
	if idx == nil {
		idx = &nameIdx{name: name}
		c.names[name] = idx
	}
	return idx
}

// room reports whether the tree may grow by n records and b bytes.
func (c *core) room(n int, b int64) bool {
	return c.nrecs+n <= c.opts.MaxBindings && c.nbytes+b <= c.opts.MaxTreeBytes
}

// usage is the records and bytes charged to one member.
type usage struct {
	n int
	b int64
}

// charge adds n records and b bytes to member's usage.
func (c *core) charge(member string, n int, b int64) {
	u := c.usage[member]
	u.n, u.b = u.n+n, u.b+b
	if u.n == 0 && u.b == 0 {
		delete(c.usage, member)
		return
	}
	c.usage[member] = u
}

// quota reports whether a write that grows the tree by treeN records and
// treeB bytes, and member's usage by n and b, fits member's quota. A write
// that does not grow the tree always fits: a member over its quota can
// still unbind and shrink what it holds.
func (c *core) quota(member string, treeN int, treeB int64, n int, b int64) bool {
	if treeN <= 0 && treeB <= 0 {
		return true
	}
	u := c.usage[member]
	return u.n+n <= c.opts.MaxMemberBindings && u.b+b <= c.opts.MaxMemberBytes
}

func recSize(name string, value []byte) int64 { return int64(len(name) + len(value)) }

// putRec stores r in o, replacing old (o's previous record for the name).
func (c *core) putRec(o *owner, r, old *rec) {
	idx := c.index(r.name)
	r.name = idx.name // share one copy of the string
	if old != nil {
		for i, x := range idx.recs {
			if x == old {
				idx.recs[i] = r
			}
		}
		o.hash ^= recHash(old.name, old.ver)
		c.nbytes -= recSize(old.name, old.value)
		c.charge(o.name, -1, -recSize(old.name, old.value))
	} else {
		idx.recs = append(idx.recs, r)
		c.nrecs++
	}
	o.recs[r.name] = r
	o.hash ^= recHash(r.name, r.ver)
	c.nbytes += recSize(r.name, r.value)
	c.charge(o.name, 1, recSize(r.name, r.value))
	c.markDirty(r.name)
	c.digestDirty = true
}

func (c *core) delRec(o *owner, r *rec) {
	delete(o.recs, r.name)
	if idx := c.names[r.name]; idx != nil {
		idx.recs = slices.DeleteFunc(idx.recs, func(x *rec) bool { return x == r })
	}
	o.hash ^= recHash(r.name, r.ver)
	c.nrecs--
	c.nbytes -= recSize(r.name, r.value)
	c.charge(o.name, -1, -recSize(r.name, r.value))
	c.markDirty(r.name)
	c.digestDirty = true
}

func (c *core) addTomb(o *owner, name string, ver uint64) {
	o.tombs[name] = ver
	o.tombQ = append(o.tombQ, tomb{name, ver})
	for len(o.tombs) > maxTombs && len(o.tombQ) > 0 {
		t := o.tombQ[0]
		o.tombQ = o.tombQ[1:]
		if v, ok := o.tombs[t.name]; ok && v == t.ver {
			delete(o.tombs, t.name)
			o.floor = max(o.floor, t.ver)
		}
	}
	if len(o.tombQ) > 2*maxTombs { // drop entries of names bound again
		q := make([]tomb, 0, len(o.tombs))
		for _, t := range o.tombQ {
			if v, ok := o.tombs[t.name]; ok && v == t.ver {
				q = append(q, t)
			}
		}
		o.tombQ = q
	}
}

func (c *core) removeOwner(o *owner) {
	for _, r := range o.recs {
		c.delRec(o, r)
	}
	delete(c.owners, o.name)
	delete(c.fetches, o.name)
	c.digestDirty = true
}

// accept reports whether node-scoped data of owner at incarnation inc may
// be stored: not from a node this node saw leave or fail (until it joins
// again), nor from an incarnation that closed.
func (c *core) accept(owner string, inc uint64) bool {
	if owner == c.self {
		return false
	}
	if _, gone := c.departed[owner]; gone {
		return false
	}
	return inc > c.retired[owner]
}

// ownerAt returns owner name's state at incarnation inc, replacing an
// older incarnation's (whose records all go), or nil when inc is older
// than the one known.
func (c *core) ownerAt(name string, inc uint64) *owner {
	o := c.owners[name]
	switch {
	case o == nil:
	case inc == o.inc:
		return o
	case inc < o.inc:
		return nil
	default:
		c.log.Debug("owner has a new incarnation; dropping the old one's bindings", "owner", name)
		c.removeOwner(o)
	}
	o = newOwner(name, inc)
	c.owners[name] = o
	c.digestDirty = true
	return o
}

// applyRec applies one record of owner o (from gossip or a fetch).
func (c *core) applyRec(o *owner, w *recWire) {
	c.clock.Observe(w.T)
	old := o.recs[w.N]
	if old != nil && old.ver >= w.V {
		return
	}
	if tv, ok := o.tombs[w.N]; ok && tv >= w.V {
		return
	}
	if w.D {
		if old != nil {
			c.delRec(o, old)
		}
		c.addTomb(o, w.N, w.V)
	} else {
		var n int
		var b int64 = recSize(w.N, w.X)
		if old == nil {
			n = 1
		} else {
			b -= recSize(old.name, old.value)
		}
		if !c.quota(o.name, n, b, n, b) {
			c.stats.overQuota.Add(1)
			return
		}
		if !c.room(n, b) {
			c.stats.rejected.Add(1)
			return
		}
		delete(o.tombs, w.N)
		c.putRec(o, &rec{name: w.N, owner: o.name, ver: w.V, born: w.B, ts: w.T, flags: w.F, value: w.X}, old)
	}
	o.max = max(o.max, w.V)
	c.digestDirty = true
}

// applyCrec merges one cluster-scoped record; it reports whether it was
// newer than what this node had.
func (c *core) applyCrec(w *crecWire) bool {
	c.clock.Observe(w.T)
	bk := bucketOf(w.N)
	old := c.cbucket[bk][w.N]
	if old != nil && !(w.T > old.ts || (w.T == old.ts && w.W > old.writer)) {
		return false
	}
	if w.D && c.expired(w.T) && (old == nil || old.deleted) {
		return false // a tombstone already collected elsewhere: do not revive it
	}
	n, b := 1, recSize(w.N, w.X)
	if old != nil {
		n, b = 0, b-recSize(old.name, old.value)
	}
	mn, mb := c.crecCharge(w.W, w.N, w.X, old)
	if !c.quota(w.W, n, b, mn, mb) {
		c.stats.overQuota.Add(1)
		return false
	}
	if !w.D && !c.room(n, b) {
		c.stats.rejected.Add(1)
		return false
	}
	r := &crec{name: c.index(w.N).name, writer: w.W, creator: w.O, born: w.B, ts: w.T, deleted: w.D, value: w.X}
	if old != nil {
		c.bhash[bk] ^= crecHash(old)
		c.chash ^= crecHash(old)
		c.nbytes -= recSize(old.name, old.value)
		c.charge(old.writer, -1, -recSize(old.name, old.value))
	} else {
		c.nrecs++
		c.ncrecs++
	}
	c.cbucket[bk][w.N] = r
	c.bhash[bk] ^= crecHash(r)
	c.chash ^= crecHash(r)
	c.nbytes += recSize(r.name, r.value)
	c.charge(r.writer, 1, recSize(r.name, r.value))
	c.index(w.N).c = r
	// Our live binding replaced by a concurrent Bind of another lineage:
	// this node lost the race and is told.
	if old != nil && !old.deleted && !w.D && old.writer == c.self && w.W != c.self && (w.B != old.born || w.O != old.creator) {
		c.stats.conflicts.Add(1)
		c.events = append(c.events, Event{Type: EventConflict, Name: w.N,
			Binding: c.clusterBinding(r),
			Old:     c.clusterBinding(old)})
	}
	c.markDirty(w.N)
	c.digestDirty = true
	return true
}

func (c *core) dropCrec(r *crec) {
	bk := bucketOf(r.name)
	delete(c.cbucket[bk], r.name)
	c.bhash[bk] ^= crecHash(r)
	c.chash ^= crecHash(r)
	c.nrecs--
	c.ncrecs--
	c.nbytes -= recSize(r.name, r.value)
	c.charge(r.writer, -1, -recSize(r.name, r.value))
	if idx := c.names[r.name]; idx != nil && idx.c == r {
		idx.c = nil
	}
	c.markDirty(r.name)
	c.digestDirty = true
}

func (c *core) expired(ts uint64) bool {
	return tsTime(ts).Before(c.now().Add(-c.opts.TombstoneTTL))
}

func (c *core) clusterBinding(r *crec) Binding {
	return Binding{Name: r.name, Scope: ClusterScope, Offers: []Offer{{Node: r.writer, Value: r.value, Claimed: r.born}}}
}

// crecCharge is what writing the cluster-scoped record name = value over
// old adds to writer's usage.
func (c *core) crecCharge(writer, name string, value []byte, old *crec) (int, int64) {
	if old != nil && old.writer == writer {
		return 0, recSize(name, value) - recSize(old.name, old.value)
	}
	return 1, recSize(name, value)
}
