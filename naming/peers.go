package naming

import "time"

// Messages from peers: the gossiped changes, and the anti-entropy that
// repairs what gossip loses (beacons, digests, and fetches of an owner's
// records or of cluster-scoped buckets); confirm.go handles the
// confirmations. Each handler updates the core and queues its answers in
// out, and none waits for a reply: a lost message or answer costs a later
// retry (the next beacon, digest or fetch deadline), never a stuck loop.

// handle applies one decoded message from node from.
func (c *core) handle(from string, t msgType, v any) {
	switch m := v.(type) {
	case *changeMsg:
		c.onChange(from, m)
	case *clustMsg:
		c.onClust(from, m)
	case *beaconMsg:
		c.onBeacon(from, m)
	case *retireMsg:
		if o := c.owners[from]; o != nil && from != c.self && o.inc <= m.I {
			c.removeOwner(o)
		}
		if from != c.self {
			c.retired[from] = max(c.retired[from], m.I)
		}
	case *fetchOwnerMsg:
		c.onFetchOwner(from, m)
	case *ownerDataMsg:
		c.onOwnerData(from, m)
	case *digestMsg:
		c.mergeDigest(from, m)
		if t == msgDigestReq {
			c.direct(from, msgDigest, c.digest())
		}
	case *fetchClustMsg:
		c.onFetchClust(from, m)
	case *clustDataMsg:
		for i := range m.Recs {
			c.applyCrec(&m.Recs[i])
		}
	case *confirmMsg:
		c.onConfirm(from, m)
	case *confirmAckMsg:
		c.onConfirmAck(from, m)
	}
}

func (c *core) onChange(from string, m *changeMsg) {
	if !c.accept(from, m.I) {
		c.stats.stale.Add(1)
		return
	}
	o := c.ownerAt(from, m.I)
	if o == nil {
		c.stats.stale.Add(1)
		return
	}
	if m.R.Big {
		if r := o.recs[m.R.N]; (r == nil || r.ver < m.R.V) && o.tombs[m.R.N] < m.R.V {
			c.requestOwner(from, false)
		}
		return
	}
	c.applyRec(o, &m.R)
	if m.R.V == o.ver+1 {
		o.ver = m.R.V
	}
}

func (c *core) onClust(from string, m *clustMsg) {
	if !m.R.Big {
		c.applyCrec(&m.R)
		return
	}
	old := c.cbucket[bucketOf(m.R.N)][m.R.N]
	if old == nil || m.R.T > old.ts || (m.R.T == old.ts && m.R.W > old.writer) {
		c.direct(from, msgFetchClust, fetchClustMsg{Names: []string{m.R.N}})
	}
}

func (c *core) onBeacon(from string, m *beaconMsg) {
	if c.accept(from, m.I) {
		o := c.owners[from]
		switch {
		case o == nil:
			if m.V > 0 {
				c.requestOwner(from, false)
			}
		case m.I < o.inc:
		case m.I == o.inc && m.V == o.max && m.H == o.hash:
			o.ver = o.max // caught up: the owner says so
		default:
			c.requestOwner(from, m.I == o.inc && m.V <= o.max)
		}
	}
	if m.CH != c.chash {
		c.askDigest(from)
	}
}

// requestOwner asks owner for its records since the version this node
// has, or with full for all of them; one fetch per owner at a time.
//
// A full copy repairs what a delta cannot: this copy counts every version
// the owner announced, yet the hashes differ. It then holds a record the
// owner deleted at a version already counted: one relayed by a third node
// (a confirmation's answer) after a full fetch, which carries no
// tombstones.
func (c *core) requestOwner(name string, full bool) {
	if name == c.self {
		return
	}
	if _, gone := c.departed[name]; gone {
		return
	}
	now := c.now()
	if f := c.fetches[name]; f != nil && now.Before(f.deadline) {
		return
	}
	var inc, since uint64
	if o := c.owners[name]; o != nil && !full {
		inc, since = o.inc, o.ver
	}
	c.nextReq++
	c.fetches[name] = &fetch{req: c.nextReq, deadline: now.Add(c.opts.FetchTimeout)}
	c.stats.fetches.Add(1)
	c.log.Debug("fetch owner", "owner", name, "inc", inc, "since", since)
	c.direct(name, msgFetchOwner, fetchOwnerMsg{Req: c.nextReq, I: inc, Since: since})
}

// askDigest asks a peer for its digest (sending ours), at most once per
// second per peer.
func (c *core) askDigest(peer string) {
	now := c.now()
	if t, ok := c.asked[peer]; ok && now.Sub(t) < time.Second {
		return
	}
	c.asked[peer] = now
	c.direct(peer, msgDigestReq, c.digest())
}

func (c *core) onFetchOwner(from string, m *fetchOwnerMsg) {
	self := c.owners[c.self]
	resp := &ownerDataMsg{Req: m.Req, I: c.inc, V: self.max}
	if m.I != c.inc || m.Since < self.floor || m.Since > self.max {
		resp.Full = true
		resp.Recs = make([]recWire, 0, len(self.recs))
		for _, r := range self.recs {
			resp.Recs = append(resp.Recs, recWire{N: r.name, V: r.ver, B: r.born, T: r.ts, F: r.flags, X: r.value})
		}
	} else {
		for _, r := range self.recs {
			if r.ver > m.Since {
				resp.Recs = append(resp.Recs, recWire{N: r.name, V: r.ver, B: r.born, T: r.ts, F: r.flags, X: r.value})
			}
		}
		for name, v := range self.tombs {
			if v > m.Since {
				resp.Recs = append(resp.Recs, recWire{N: name, V: v, D: true})
			}
		}
	}
	c.stats.served.Add(1)
	c.out = append(c.out, outMsg{to: from, owner: resp})
}

func (c *core) onOwnerData(from string, m *ownerDataMsg) {
	f := c.fetches[from]
	if !c.accept(from, m.I) || f == nil || f.req != m.Req {
		c.stats.stale.Add(1)
		return
	}
	if m.Seq != f.nextSeq {
		c.stats.stale.Add(1)
		delete(c.fetches, from) // a chunk went missing: start again later
		return
	}
	f.nextSeq++
	o := c.owners[from]
	if m.Seq == 0 {
		if o = c.ownerAt(from, m.I); o == nil {
			delete(c.fetches, from)
			return
		}
		f.full, f.v = m.Full, m.V
		if m.Full {
			f.seen = make(map[string]struct{}, len(m.Recs))
		}
	}
	if o == nil || o.inc != m.I {
		delete(c.fetches, from)
		return
	}
	for i := range m.Recs {
		c.applyRec(o, &m.Recs[i])
		if f.full {
			f.seen[m.Recs[i].N] = struct{}{}
		}
	}
	if !m.Last {
		return
	}
	if f.full {
		for name, r := range o.recs {
			if _, ok := f.seen[name]; !ok && r.ver <= f.v {
				c.delRec(o, r)
			}
		}
	}
	o.ver = max(o.ver, f.v)
	o.max = max(o.max, f.v)
	c.digestDirty = true
	delete(c.fetches, from)
}

// digest summarises this node's copy for a peer.
func (c *core) digest() *digestMsg {
	d := &digestMsg{Owners: make([]ownerDigest, 0, len(c.owners)), CH: c.chash}
	for _, o := range c.owners {
		d.Owners = append(d.Owners, ownerDigest{N: o.name, I: o.inc, V: o.max, H: o.hash})
	}
	if c.ncrecs > 0 {
		d.Buckets = c.bhash[:]
	}
	return d
}

// mergeDigest compares a peer's digest with this node's copy and fetches
// what this node lacks: an owner's records from that owner, cluster-scoped
// buckets from the peer. The peer does the same with our digest, so each
// side pulls and nothing is pushed.
func (c *core) mergeDigest(from string, d *digestMsg) {
	for _, od := range d.Owners {
		if !c.accept(od.N, od.I) {
			continue
		}
		o := c.owners[od.N]
		switch {
		case o == nil:
			if od.V > 0 {
				c.requestOwner(od.N, false)
			}
		case od.I < o.inc:
		case od.I > o.inc || od.V > o.max || (od.V == o.max && od.H != o.hash):
			c.requestOwner(od.N, od.I == o.inc && od.V <= o.max)
		case from == od.N && od.V == o.max && od.H == o.hash:
			o.ver = o.max
		}
	}
	if d.CH == c.chash || len(d.Buckets) != numBuckets {
		return
	}
	var diff []int
	for i, h := range d.Buckets {
		if h != c.bhash[i] {
			diff = append(diff, i)
		}
	}
	if len(diff) > 0 {
		c.direct(from, msgFetchClust, fetchClustMsg{Buckets: diff})
	}
}

func (c *core) onFetchClust(from string, m *fetchClustMsg) {
	resp := &clustDataMsg{}
	add := func(r *crec) {
		resp.Recs = append(resp.Recs, crecWire{N: r.name, W: r.writer, O: r.creator, B: r.born, T: r.ts, X: r.value, D: r.deleted})
	}
	for _, b := range m.Buckets {
		for _, r := range c.cbucket[b] {
			add(r)
		}
	}
	for _, n := range m.Names {
		if r := c.cbucket[bucketOf(n)][n]; r != nil {
			add(r)
		}
	}
	if len(resp.Recs) > 0 {
		c.stats.served.Add(1)
		c.out = append(c.out, outMsg{to: from, clust: resp})
	}
}
