package naming

import (
	"cmp"
	"slices"

	iradix "github.com/hashicorp/go-immutable-radix/v2"
)

// The visible tree: how the records held for a name become the one
// Binding that readers see, and how the changed names reach the published
// radix tree and the watchers. It sits apart from the record bookkeeping
// because it must stay a pure function of the records: nodes holding the
// same records must show the same tree whatever order the records arrived
// in, so build decides from the records alone and keeps no state.

// candidate is one record competing for a name.
type candidate struct {
	born uint64
	node string
	r    *rec
	c    *crec
}

func candCmp(a, b candidate) int {
	if a.born != b.born {
		return cmp.Compare(a.born, b.born)
	}
	return cmp.Compare(a.node, b.node)
}

// build computes what name shows from its records, the same on every
// node that has the same records:
//
//   - the records compete in order of (first-bind HLC, node name);
//   - if the first is a clusterable node-scoped record, every clusterable
//     node-scoped record is an offer, sorted by node;
//   - otherwise the first alone is the binding.
//
// Records that lose are hidden; lostRec/lostClust return this node's own
// losing records, which the caller removes (telling the watchers).
func (c *core) build(name string, idx *nameIdx) (e *entry, lostRec *rec, lostClust *crec) {
	live := idx.c != nil && !idx.c.deleted
	switch {
	case len(idx.recs) == 0 && !live:
		return nil, nil, nil
	case len(idx.recs) == 1 && !live:
		r := idx.recs[0]
		return single(name, NodeScope, r.flags&flagClusterable != 0, r.owner, r.value, r.born), nil, nil
	case len(idx.recs) == 0:
		return single(name, ClusterScope, false, idx.c.writer, idx.c.value, idx.c.born), nil, nil
	}
	cands := make([]candidate, 0, len(idx.recs)+1)
	for _, r := range idx.recs {
		cands = append(cands, candidate{born: r.born, node: r.owner, r: r})
	}
	if live {
		cands = append(cands, candidate{born: idx.c.born, node: idx.c.writer, c: idx.c})
	}
	first := slices.MinFunc(cands, candCmp)
	if first.c != nil {
		for _, x := range cands {
			if x.r != nil && x.r.owner == c.self {
				lostRec = x.r
			}
		}
		return single(name, ClusterScope, false, first.c.writer, first.c.value, first.c.born), lostRec, nil
	}
	if live && idx.c.writer == c.self {
		lostClust = idx.c
	}
	if first.r.flags&flagClusterable == 0 {
		for _, x := range cands {
			if x.r != nil && x.r != first.r && x.r.owner == c.self {
				lostRec = x.r
			}
		}
		return single(name, NodeScope, false, first.r.owner, first.r.value, first.r.born), lostRec, lostClust
	}
	var offers []Offer
	for _, x := range cands {
		if x.r == nil {
			continue
		}
		if x.r.flags&flagClusterable == 0 {
			if x.r.owner == c.self {
				lostRec = x.r
			}
			continue
		}
		offers = append(offers, Offer{Node: x.r.owner, Value: x.r.value, Claimed: x.r.born})
	}
	slices.SortFunc(offers, func(a, b Offer) int { return cmp.Compare(a.Node, b.Node) })
	if len(offers) == 1 {
		return single(name, NodeScope, true, offers[0].Node, offers[0].Value, offers[0].Claimed), lostRec, lostClust
	}
	return &entry{b: Binding{Name: name, Scope: NodeScope, Clusterable: true, Offers: offers}}, lostRec, lostClust
}

func single(name string, s Scope, clusterable bool, node string, value []byte, claimed uint64) *entry {
	e := &entry{b: Binding{Name: name, Scope: s, Clusterable: clusterable}}
	e.one[0] = Offer{Node: node, Value: value, Claimed: claimed}
	e.b.Offers = e.one[:]
	return e
}

// flush recomputes every name touched since the last flush, updates the
// read view and queues the watch events. It returns the new root if it
// changed, else nil.
func (c *core) flush() *iradix.Tree[*entry] {
	for len(c.dirtyOrder) > 0 {
		names := c.dirtyOrder
		c.dirtyOrder = nil
		for _, n := range names {
			delete(c.dirty, n)
			c.recompute(n)
		}
	}
	if c.txn == nil {
		return nil
	}
	c.root = c.txn.CommitOnly()
	c.txn = nil
	return c.root
}

func (c *core) recompute(name string) {
	idx := c.names[name]
	if idx == nil {
		return
	}
	old := idx.cur
	nw, lostRec, lostClust := c.build(name, idx)
	if sameEntry(old, nw) {
		nw = old
	} else {
		if c.txn == nil {
			c.txn = c.root.Txn()
		}
		ev := Event{Name: name, Binding: nw.binding(), Old: old.binding()}
		switch {
		case nw == nil:
			c.txn.Delete(keyOf(name))
			ev.Type = EventUnbound
		case old == nil:
			c.txn.Insert([]byte(name), nw)
			ev.Type = EventBound
		default:
			c.txn.Insert([]byte(name), nw)
			ev.Type = EventRebound
		}
		c.changed = append(c.changed, indexChange{name: idx.name, e: nw})
		c.events = append(c.events, ev)
	}
	idx.cur = nw
	if lostRec != nil {
		c.stats.conflicts.Add(1)
		c.events = append(c.events, Event{Type: EventConflict, Name: name, Binding: nw.binding(),
			Old: single(name, NodeScope, lostRec.flags&flagClusterable != 0, c.self, lostRec.value, lostRec.born).b})
		c.localDelete(lostRec)
	}
	if lostClust != nil {
		c.stats.conflicts.Add(1)
		c.events = append(c.events, Event{Type: EventConflict, Name: name, Binding: nw.binding(), Old: c.clusterBinding(lostClust)})
		c.clusterWrite(name, nil, lostClust, true)
	}
	if len(idx.recs) == 0 && idx.c == nil && idx.cur == nil {
		delete(c.names, name)
	}
}
