package replication

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/internal/wire"
)

// The table of copies: every session this node holds, as primary or
// secondary (entry, its replicated state, its locks), the attributes,
// and the keys remembered for a while (tombstones, forwarding pointers).

type role uint8

const (
	roleNone      role = iota // dropped: no longer in the table
	rolePrimary               // this node serves the session
	roleSecondary             // this node backs another node's copy
)

// entry is one session held by this node, as primary or secondary.
//
// Locks: the write lock (lock, unlock) serializes everything that
// changes the session (saves, applies, route changes, hand-overs) and
// may be held across network calls; waiting for it honours a context.
// mu guards st and the write lock's own fields and is held only to copy
// or replace them. Never take the write lock while holding mu.
//
// A node holds an entry for every session it is primary or secondary
// of, hundreds of thousands on a busy server, so the entry is kept to
// one allocation: the write lock needs no channel until two callers
// want it at once, and the fields of a copy kept across a hand-over
// live behind a pointer (kept).
type entry struct {
	key  string
	last atomic.Int64 // last access, nanoseconds since Sessions.start
	used atomic.Bool  // accessed since the last touch sent to the secondary
	// moving is set while a failover job for the entry is scheduled, so
	// that the janitor does not schedule another.
	moving atomic.Bool
	// confirmed is when the primary last showed that this secondary copy
	// is current (nanoseconds since Sessions.start).
	confirmed atomic.Int64

	mu      sync.Mutex
	held    bool    // the write lock is taken
	dead    bool    // dropped: out of the table for good
	waiters *waiter // callers waiting for the write lock, first to come first
	st      state
}

// waiter is a caller waiting for an entry's write lock; unlock hands the
// lock over by sending on ch (buffered: unlock never blocks).
type waiter struct {
	ch   chan struct{}
	next *waiter
}

// state is an entry's replicated state. Its slices and what kept points
// to are never modified once published: changes build new ones.
type state struct {
	role role
	// provisional marks a secondary copy made by a full copy whose
	// primary has not since shown that it counts this node as its
	// secondary (an incremental change, a verify, or a confirm). The
	// primary may never have had the answer: it then chose another
	// secondary, and this copy is an orphan that must not be promoted
	// beside that secondary's (see promote and acquire).
	provisional bool
	epoch       uint64
	members     int
	version     uint64
	// sent is the highest version this primary ever sent to a secondary,
	// acknowledged or not: a change whose call failed may have been
	// applied there, so its version is never reused for another change.
	sent       uint64
	attrs      attrs
	size       int
	primary    string // node name of the primary (this node when rolePrimary)
	primaryInc uint64 // secondary only: the incarnation of the primary that sent the copy, 0 if unknown
	// kept marks a copy kept by a node that handed the session over,
	// until the new primary confirms it (nil otherwise): if the new
	// primary never installed the session, this copy is the session, not
	// an orphan.
	kept      *handover
	secondary string   // primary only: node name of the secondary, "" for none
	contested []string // nodes that may hold a diverged copy; see resolve
	// verifiedGen is the lease generation of the secondary when it last
	// confirmed this copy; a different current generation means the
	// secondary took over some of our sessions, maybe this one.
	verifiedGen uint64
}

// handover describes what a kept copy (state.kept) was before it was
// first handed over: its rank and its secondary. If the new primary
// never installed the session, the old secondary still backs that
// lineage and may have promoted its copy (failover saw this node fail
// meanwhile), so whoever takes this copy over makes it its secondary or
// knows it down; and against other lineages this copy weighs what it did
// before (see standing). Never modified once published.
type handover struct {
	handedFrom   rank
	oldSecondary string
}

// pending reports whether st is a copy kept for a new primary that has
// not confirmed it.
func (st *state) pending() bool { return st.kept != nil }

func (st *state) rank() rank { return rank{st.epoch, st.members, st.primary} }

// backed clears the provisional mark of e, a secondary copy of primary's
// at epoch, now that its primary showed that it counts this node as its
// secondary. Under e.mu only: a writer that publishes a state read before
// keeps the mark, which is merely cautious.
func (s *Sessions) backed(e *entry, epoch uint64, primary string) {
	e.mu.Lock()
	if !e.dead && e.st.provisional && e.st.role == roleSecondary && e.st.epoch == epoch && e.st.primary == primary {
		e.st.provisional = false
	}
	e.mu.Unlock()
}

// standing is the rank copy st weighs against other copies: its own,
// except for a copy kept for a new primary that has not confirmed it
// (pending), which weighs what it did before the handover. The handover
// may never have been installed, while another lineage went on from the
// old secondary's copy, which held every write ours holds (failover
// promoted it while the handover was under way across a cut); and a kept
// copy handed over again and again, each time at the next epoch, would
// otherwise outrank that lineage and the writes acknowledged on it.
func (st *state) standing() rank {
	if st.kept != nil && st.role == roleSecondary {
		return st.kept.handedFrom
	}
	return st.rank()
}

// outranks reports whether copy st wins over another copy of the session
// that ranks at theirs.
func (st *state) outranks(theirs rank) bool { return st.standing().cmp(theirs) > 0 }

func newEntry(key string, now int64) *entry {
	e := &entry{key: key}
	e.last.Store(now)
	e.confirmed.Store(now)
	return e
}

// lock takes the write lock, or fails when ctx ends first.
func (e *entry) lock(ctx context.Context) error {
	w := e.tryLockOrWait()
	if w == nil {
		return nil
	}
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		return e.giveUp(w, context.Cause(ctx))
	}
}

// lockWithin is lock bounded by d: handlers use it, so that two nodes
// each holding a session's lock while calling the other (two takeovers
// racing) fail fast with a busy answer instead of waiting each other out.
func (e *entry) lockWithin(ctx context.Context, d time.Duration) error {
	w := e.tryLockOrWait()
	if w == nil {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.ch:
		return nil
	case <-t.C:
		return e.giveUp(w, errBusy)
	case <-ctx.Done():
		return e.giveUp(w, context.Cause(ctx))
	}
}

// tryLockOrWait takes the write lock if it is free (nil), or queues a
// waiter that unlock will hand it to.
func (e *entry) tryLockOrWait() *waiter {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.held {
		e.held = true
		return nil
	}
	w := &waiter{ch: make(chan struct{}, 1)}
	p := &e.waiters
	for *p != nil {
		p = &(*p).next
	}
	*p = w
	return w
}

// giveUp takes w out of the queue and returns err; if unlock handed w the
// lock meanwhile, it passes the lock on instead.
func (e *entry) giveUp(w *waiter, err error) error {
	e.mu.Lock()
	for p := &e.waiters; *p != nil; p = &(*p).next {
		if *p == w {
			*p = w.next
			e.mu.Unlock()
			return err
		}
	}
	e.mu.Unlock()
	<-w.ch
	e.unlock()
	return err
}

// tryLock takes the write lock if it is free.
func (e *entry) tryLock() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.held {
		return false
	}
	e.held = true
	return true
}

// unlock releases the write lock, to the first waiter if there is one.
func (e *entry) unlock() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if w := e.waiters; w != nil {
		e.waiters = w.next
		w.ch <- struct{}{}
		return
	}
	e.held = false
}

func (e *entry) state() state {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st
}

func (s *Sessions) lookup(key string) *entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.entries[key]
}

// insert adds e unless the key is taken, and returns the entry in the
// table.
func (s *Sessions) insert(e *entry) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil, ErrClosed
	}
	if old := s.mu.entries[e.key]; old != nil {
		return old, nil
	}
	s.mu.entries[e.key] = e
	return e, nil
}

func (s *Sessions) entries() []*entry { return s.appendEntries(nil) }

// appendEntries appends every entry to buf: the janitor passes the slice
// of its last sweep, so that a table of hundreds of thousands of
// sessions does not cost a new slice of that size every tick.
func (s *Sessions) appendEntries(buf []*entry) []*entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	buf = slices.Grow(buf[:0], len(s.mu.entries))
	for _, e := range s.mu.entries {
		buf = append(buf, e)
	}
	return buf
}

// publish replaces e's state with st, unless e was dropped meanwhile; a
// state with roleNone drops it. It keeps the role counters right.
func (s *Sessions) publish(e *entry, st state) bool {
	e.mu.Lock()
	if e.dead {
		e.mu.Unlock()
		return false
	}
	old := e.st.role
	e.st = st
	e.dead = st.role == roleNone
	e.mu.Unlock()
	s.countRole(old, -1)
	s.countRole(st.role, +1)
	if st.role == roleNone {
		s.mu.Lock()
		if s.mu.entries[e.key] == e {
			delete(s.mu.entries, e.key)
		}
		s.mu.Unlock()
	}
	return true
}

// drop removes e from the table whatever its state (invalidation, or
// under e's write lock); handles on it get ErrStale.
func (s *Sessions) drop(e *entry, reason string) {
	if s.publish(e, state{role: roleNone}) {
		s.log.Debug("dropped a session copy", "session", keyRef(e.key), "reason", reason)
	}
}

// dropIf drops e only if it still holds the copy that st, an earlier
// snapshot, describes (same role, epoch and primary): a decision made on
// a snapshot must not drop a copy that changed meanwhile, such as a
// secondary copy promoted in place by a concurrent Get.
func (s *Sessions) dropIf(e *entry, st state, reason string) bool {
	e.mu.Lock()
	if e.dead || e.st.role != st.role || e.st.epoch != st.epoch || e.st.primary != st.primary {
		e.mu.Unlock()
		return false
	}
	old := e.st.role
	e.st = state{}
	e.dead = true
	e.mu.Unlock()
	s.countRole(old, -1)
	s.mu.Lock()
	if s.mu.entries[e.key] == e {
		delete(s.mu.entries, e.key)
	}
	s.mu.Unlock()
	s.log.Debug("dropped a session copy", "session", keyRef(e.key), "reason", reason)
	return true
}

// dropIfIdle is dropIf for a caller that does not hold e's write lock:
// it takes it first (within handlerWait), so that a drop never lands in
// the middle of a change another holder is making (a promotion that has
// already handed its copy to a new secondary, say) and leaves that
// change half done. It reports false, keeping the copy, when the lock
// was not free in time: a copy kept is found again; one dropped is gone.
func (s *Sessions) dropIfIdle(ctx context.Context, e *entry, st state, reason string) bool {
	if err := e.lockWithin(ctx, s.handlerWait()); err != nil {
		return false
	}
	defer e.unlock()
	return s.dropIf(e, st, reason)
}

// dropStale drops a primary copy found outdated and tells its secondary,
// whose copy is as outdated (it keeps a copy that ranks higher).
func (s *Sessions) dropStale(e *entry, st state) {
	if !s.dropIf(e, st, "stale: a newer copy exists") {
		return
	}
	s.stats.staleDrops.Add(1)
	s.log.Debug("dropped a stale session copy", "session", keyRef(e.key), "epoch", st.epoch)
	if st.secondary != "" {
		s.spawn(func() { s.sendDrop(st.secondary, e.key, st.rank(), false) })
	}
}

func (s *Sessions) countRole(r role, d int64) {
	switch r {
	case rolePrimary:
		s.nPrimary.Add(d)
	case roleSecondary:
		s.nSecond.Add(d)
	}
}

// now is the monotonic clock entries record their last access with.
func (s *Sessions) now() int64 { return int64(time.Since(s.start)) }

func (s *Sessions) touch(e *entry) {
	e.last.Store(s.now())
	if !e.used.Load() {
		e.used.Store(true)
	}
}

// tombTTL is how long an invalidated key is remembered: past it, every
// copy left anywhere has expired.
func (s *Sessions) tombTTL() time.Time {
	return time.Now().Add(s.opts.IdleTimeout + 4*s.opts.tick())
}

// movedTo remembers that key's session went to name.
func (s *Sessions) movedTo(key, name string) {
	if name != "" && name != s.self {
		s.moved.put(key, name, s.tombTTL())
	}
}

// attrs is a session's attributes, sorted by name. A published attrs is
// never modified: changes build a new one (a copy and a merge, much
// cheaper than rebuilding a map on every Save).
type attrs []attr

type attr struct {
	k string
	v []byte
}

func (a attrs) get(k string) ([]byte, bool) {
	i, ok := a.index(k)
	if !ok {
		return nil, false
	}
	return a[i].v, true
}

// size is what MaxSessionSize limits: names and values.
func (a attrs) size() int {
	n := 0
	for _, x := range a {
		n += len(x.k) + len(x.v)
	}
	return n
}

// index returns where k is in a, or where it would go.
func (a attrs) index(k string) (int, bool) {
	return slices.BinarySearchFunc(a, k, func(x attr, k string) int { return strings.Compare(x.k, k) })
}

// put sets k to v in place and returns the result: for a change set that
// its owner builds, never for a published attrs.
func (a attrs) put(k string, v []byte) attrs {
	i, ok := a.index(k)
	if ok {
		a[i].v = v
		return a
	}
	return slices.Insert(a, i, attr{k, v})
}

// remove deletes k in place and returns the result, as put.
func (a attrs) remove(k string) attrs {
	if i, ok := a.index(k); ok {
		return slices.Delete(a, i, i+1)
	}
	return a
}

// with returns a new attrs: a with the changes set (sorted, as every
// attrs) and del applied; a name in both is set.
func (a attrs) with(set attrs, del []string) attrs {
	if len(del) > 1 {
		del = slices.Sorted(slices.Values(del))
	}
	out := make(attrs, 0, len(a)+len(set))
	i, j, d := 0, 0, 0
	for i < len(a) || j < len(set) {
		if j < len(set) && (i == len(a) || set[j].k <= a[i].k) {
			if i < len(a) && a[i].k == set[j].k {
				i++ // replaced
			}
			out = append(out, set[j])
			j++
			continue
		}
		for d < len(del) && del[d] < a[i].k {
			d++
		}
		if d == len(del) || del[d] != a[i].k {
			out = append(out, a[i])
		}
		i++
	}
	return out
}

// toMap is the wire form of takeReply's attributes, and of a change set
// on go-msgpack's reflective path.
func (a attrs) toMap() map[string][]byte {
	m := make(map[string][]byte, len(a))
	for _, x := range a {
		m[x.k] = x.v
	}
	return m
}

func attrsOf(m map[string][]byte) attrs {
	a := make(attrs, 0, len(m))
	for k, v := range m {
		a = append(a, attr{k, v})
	}
	a.sort()
	return a
}

// sort puts a in order by name, in place, and reports whether every name
// is there once.
func (a attrs) sort() (unique bool) {
	slices.SortFunc(a, func(x, y attr) int { return strings.Compare(x.k, y.k) })
	for i := 1; i < len(a); i++ {
		if a[i].k == a[i-1].k {
			return false
		}
	}
	return true
}

// CodecEncodeSelf writes a as the map[string][]byte that a change set
// was on the wire before it became an attrs, and still is: codec.go
// writes the same bytes.
func (a attrs) CodecEncodeSelf(e *wire.Encoder) { e.MustEncode(a.toMap()) }

// CodecDecodeSelf reads what CodecEncodeSelf writes.
func (a *attrs) CodecDecodeSelf(d *wire.Decoder) {
	var m map[string][]byte
	d.MustDecode(&m)
	*a = attrsOf(m)
}

func withName(list []string, name string) []string {
	if name == "" || slices.Contains(list, name) {
		return list
	}
	return append(slices.Clone(list), name)
}

func withoutName(list []string, name string) []string {
	if !slices.Contains(list, name) {
		return list
	}
	out := make([]string, 0, len(list)-1)
	for _, n := range list {
		if n != name {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// keyTable remembers keys for a while, with a value: invalidated keys
// (tombstones), so that a copy left on an unreachable node is not
// brought back by a later take; and where sessions moved to (forwarding
// pointers), so that a request with an outdated route still finds them.
type keyTable struct {
	mu    sync.Mutex
	until map[string]keyEntry
	order []string // insertion order, for the size bound
}

type keyEntry struct {
	until time.Time
	value string
}

const maxKeyTable = 1 << 16

func (t *keyTable) add(key string, until time.Time) { t.put(key, "", until) }

func (t *keyTable) put(key, value string, until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.until == nil {
		t.until = map[string]keyEntry{}
	}
	if _, ok := t.until[key]; !ok {
		t.order = append(t.order, key)
	}
	t.until[key] = keyEntry{until, value}
	for len(t.order) > maxKeyTable {
		delete(t.until, t.order[0])
		t.order = t.order[1:]
	}
}

// forget drops key; sweep drops it from the order too.
func (t *keyTable) forget(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.until, key)
}

func (t *keyTable) has(key string) bool {
	_, ok := t.get(key)
	return ok
}

func (t *keyTable) get(key string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.until[key]
	return e.value, ok
}

func (t *keyTable) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	keep := t.order[:0]
	kept := make(map[string]bool, len(t.until))
	for _, k := range t.order {
		if e, ok := t.until[k]; !ok || now.After(e.until) || kept[k] {
			if !kept[k] {
				delete(t.until, k)
			}
			continue
		}
		kept[k] = true
		keep = append(keep, k)
	}
	t.order = keep
}
