package naming

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"time"

	iradix "github.com/hashicorp/go-immutable-radix/v2"

	"github.com/troupe-go/troupe/membership"
)

// core is the tree's state machine. Only the Tree's loop goroutine
// touches it; it does no I/O: it reads decoded messages, membership events
// and local operations, and leaves what must be sent in out, the watch
// events in events, and the new read view in root. Tests drive it
// directly, without goroutines or a network.
//
// Data model. Every node keeps, per owner (a node, at one incarnation of
// its tree), the owner's node-scoped records, each with the owner's
// version of its last change; and the cluster-scoped records (with
// tombstones), last-writer-wins by HLC. The visible binding of a name is a
// pure function of the records for it (see build), so nodes that hold the
// same records show the same tree.
type core struct {
	self         string
	inc          uint64 // this tree's incarnation: its start time in ns
	opts         Options
	clock        hlc
	now          func() time.Time
	stats        *counters
	log          *slog.Logger
	maxBroadcast int

	owners  map[string]*owner
	names   map[string]*nameIdx
	cbucket [numBuckets]map[string]*crec
	bhash   [numBuckets]uint64
	chash   uint64 // XOR of bhash
	ncrecs  int
	nrecs   int // node-scoped and cluster-scoped records, tombstones included
	nbytes  int64

	live     map[string]membership.Member // live members, self included
	departed map[string]time.Time         // members that left or failed, and when
	retired  map[string]uint64            // owner -> highest incarnation that closed

	fetches  map[string]*fetch    // owner -> fetch under way
	confirms map[uint64]*confirm  // request -> confirmed Bind under way
	answers  []reply              // replies to local operations that waited (confirmations)
	asked    map[string]time.Time // peer -> last digest request / cluster fetch
	nextReq  uint64
	lastGC   time.Time

	dirty      map[string]struct{}
	dirtyOrder []string
	txn        *iradix.Txn[*entry]
	root       *iradix.Tree[*entry]

	events        []Event
	changed       []indexChange // entries changed since the Tree last published its index
	out           []outMsg
	digestDirty   bool
	membersDirty  bool
	beaconDue     time.Time
	beaconFirst   time.Time
	beaconAgainAt time.Time
}

// rec is one node-scoped record: owner's offer for name.
type rec struct {
	name  string
	owner string
	ver   uint64
	born  uint64
	ts    uint64
	flags uint8
	value []byte
}

// crec is one cluster-scoped record or tombstone.
type crec struct {
	name    string
	writer  string
	creator string // with born, identifies the lineage: one Bind and its Rebinds
	born    uint64
	ts      uint64
	deleted bool
	value   []byte
}

// nameIdx gathers every record for one name and the entry published for
// it.
type nameIdx struct {
	name string
	recs []*rec
	c    *crec
	cur  *entry
}

// owner is one node's node-scoped records at one incarnation.
type owner struct {
	name  string
	inc   uint64
	ver   uint64 // every change up to ver is applied (or superseded)
	max   uint64 // highest version applied
	hash  uint64 // XOR of recHash over recs: equal hashes, equal records
	recs  map[string]*rec
	tombs map[string]uint64 // recently deleted names -> version of the deletion
	tombQ []tomb
	floor uint64 // highest version of a deletion forgotten from tombs
}

type tomb struct {
	name string
	ver  uint64
}

// maxTombs bounds the deletions an owner remembers. A peer more than
// this many deletions behind receives a full snapshot instead of a delta.
const maxTombs = 4096

type fetch struct {
	req      uint64
	deadline time.Time
	full     bool
	nextSeq  int
	v        uint64
	seen     map[string]struct{}
}

// outMsg is a message to send: a broadcast when to is "", else a direct
// message; raw is encoded, or owner/clust is a possibly large answer that
// the sender splits into chunks.
type outMsg struct {
	to    string
	key   string
	raw   []byte
	owner *ownerDataMsg
	clust *clustDataMsg
}

func newCore(self string, inc uint64, opts Options, now func() time.Time, stats *counters, maxBroadcast int) *core {
	c := &core{
		self: self, inc: inc, opts: opts, now: now, stats: stats, log: opts.Logger,
		clock:        hlc{now: now},
		maxBroadcast: maxBroadcast,
		owners:       map[string]*owner{},
		names:        map[string]*nameIdx{},
		live:         map[string]membership.Member{},
		departed:     map[string]time.Time{},
		retired:      map[string]uint64{},
		fetches:      map[string]*fetch{},
		confirms:     map[uint64]*confirm{},
		asked:        map[string]time.Time{},
		dirty:        map[string]struct{}{},
		root:         iradix.New[*entry](),
		digestDirty:  true,
		membersDirty: true,
	}
	for i := range c.cbucket {
		c.cbucket[i] = map[string]*crec{}
	}
	c.owners[self] = newOwner(self, inc)
	return c
}

func newOwner(name string, inc uint64) *owner {
	return &owner{name: name, inc: inc, recs: map[string]*rec{}, tombs: map[string]uint64{}}
}

// ---- hashing ----

func strHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func recHash(name string, ver uint64) uint64 { return mix(strHash(name) ^ mix(ver)) }

func crecHash(r *crec) uint64 {
	h := strHash(r.name) ^ mix(r.ts) ^ mix(strHash(r.writer)+1)
	if r.deleted {
		h ^= 0x9e3779b97f4a7c15
	}
	return mix(h)
}

func bucketOf(name string) int { return int(strHash(name) % numBuckets) }

// ---- record bookkeeping ----

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
	} else {
		idx.recs = append(idx.recs, r)
		c.nrecs++
	}
	o.recs[r.name] = r
	o.hash ^= recHash(r.name, r.ver)
	c.nbytes += recSize(r.name, r.value)
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
	if !w.D && !c.room(n, b) {
		c.stats.rejected.Add(1)
		return false
	}
	r := &crec{name: c.index(w.N).name, writer: w.W, creator: w.O, born: w.B, ts: w.T, deleted: w.D, value: w.X}
	if old != nil {
		c.bhash[bk] ^= crecHash(old)
		c.chash ^= crecHash(old)
		c.nbytes -= recSize(old.name, old.value)
	} else {
		c.nrecs++
		c.ncrecs++
	}
	c.cbucket[bk][w.N] = r
	c.bhash[bk] ^= crecHash(r)
	c.chash ^= crecHash(r)
	c.nbytes += recSize(r.name, r.value)
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

// ---- the visible tree ----

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

// ---- local operations ----

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
		if old := c.cbucket[bucketOf(name)][name]; old != nil {
			n, size = 0, size-recSize(old.name, old.value)
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

// ---- messages from peers ----

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
			c.requestOwner(from)
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
				c.requestOwner(from)
			}
		case m.I < o.inc:
		case m.I == o.inc && m.V == o.max && m.H == o.hash:
			o.ver = o.max // caught up: the owner says so
		default:
			c.requestOwner(from)
		}
	}
	if m.CH != c.chash {
		c.askDigest(from)
	}
}

// requestOwner asks owner for its records since the version this node
// has; one fetch per owner at a time.
func (c *core) requestOwner(name string) {
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
	if o := c.owners[name]; o != nil {
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
				c.requestOwner(od.N)
			}
		case od.I < o.inc:
		case od.I > o.inc || od.V > o.max || (od.V == o.max && od.H != o.hash):
			c.requestOwner(od.N)
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

// ---- membership ----

func (c *core) memberEvent(ev membership.Event) {
	m := ev.Member
	c.log.Debug("member event", "type", ev.Type, "member", m.Name)
	c.membersDirty = true
	if m.Name == c.self {
		c.live[m.Name] = m
		return
	}
	switch ev.Type {
	case membership.EventJoin, membership.EventUpdate:
		c.live[m.Name] = m
		if _, back := c.departed[m.Name]; back && ev.Type == membership.EventJoin {
			// A member returns (a healed partition, a restart): fetch its
			// bindings, and compare digests, which repairs the
			// cluster-scoped records both sides changed meanwhile.
			delete(c.departed, m.Name)
			c.requestOwner(m.Name)
			c.askDigest(m.Name)
		} else if o := c.owners[m.Name]; ev.Type == membership.EventJoin && o != nil && o.ver < o.max {
			c.requestOwner(m.Name)
		}
	case membership.EventLeave, membership.EventFail:
		delete(c.live, m.Name)
		c.departed[m.Name] = c.now()
		if o := c.owners[m.Name]; o != nil {
			c.removeOwner(o)
		}
		delete(c.fetches, m.Name)
		c.confirmMemberGone(m.Name)
	}
}

// ---- time ----

// tick runs the timers: beacons, fetch deadlines, and every
// gcInterval the collection of old tombstones and departed members.
func (c *core) tick() {
	now := c.now()
	if !c.beaconDue.IsZero() && !now.Before(c.beaconDue) {
		c.beaconDue = time.Time{}
		c.beaconAgainAt = now.Add(beaconAgain)
		c.sendBeacon()
	} else if !c.beaconAgainAt.IsZero() && !now.Before(c.beaconAgainAt) {
		c.beaconAgainAt = time.Time{}
		c.sendBeacon()
	}
	c.confirmTick(now)
	for name, f := range c.fetches {
		if now.After(f.deadline) {
			delete(c.fetches, name)
			if _, ok := c.live[name]; ok {
				c.requestOwner(name) // a lost request or answer: ask again
			}
		}
	}
	if now.Sub(c.lastGC) < gcInterval {
		return
	}
	c.lastGC = now
	for b := range c.cbucket {
		for _, r := range c.cbucket[b] {
			if r.deleted && c.expired(r.ts) {
				c.dropCrec(r)
			}
		}
	}
	for name, t := range c.departed {
		if now.Sub(t) > c.opts.TombstoneTTL {
			delete(c.departed, name)
		}
	}
	for name, t := range c.asked {
		if now.Sub(t) > time.Minute {
			delete(c.asked, name)
		}
	}
}

const gcInterval = 10 * time.Second

func (c *core) sendBeacon() {
	self := c.owners[c.self]
	raw, err := encodeMsg(msgBeacon, beaconMsg{I: c.inc, V: self.max, H: self.hash, CH: c.chash})
	if err != nil {
		return
	}
	c.out = append(c.out, outMsg{key: "beacon", raw: raw})
}

// retire tells the peers that this tree is closing.
func (c *core) retire() {
	raw, err := encodeMsg(msgRetire, retireMsg{I: c.inc})
	if err == nil {
		c.out = append(c.out, outMsg{key: "retire", raw: raw})
	}
}
