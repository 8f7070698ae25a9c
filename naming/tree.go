package naming

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	iradix "github.com/hashicorp/go-immutable-radix/v2"

	"github.com/troupe-go/troupe/membership"
)

// TreeState is the lifecycle state of a Tree.
type TreeState int32

const (
	TreeRunning TreeState = iota // serving and replicating
	TreeClosed                   // closed, or its cluster shut down
)

func (s TreeState) String() string {
	switch s {
	case TreeRunning:
		return "running"
	case TreeClosed:
		return "closed"
	}
	return fmt.Sprintf("TreeState(%d)", int(s))
}

// Tree is this node's copy of the cluster-wide naming tree. Create it
// with New; stop it with Close. All methods are safe for concurrent use;
// reads (Lookup, List, Select) never block and never touch the network.
type Tree struct {
	cluster *membership.Cluster
	opts    Options
	self    string
	log     *slog.Logger
	ch      *membership.Channel
	sub     *membership.Subscription
	stats   counters

	// Published by the loop, read lock-free by everyone.
	root    atomic.Pointer[iradix.Tree[*entry]]
	index   index
	members atomic.Pointer[map[string]membership.Member]
	digest  atomic.Pointer[[]byte]
	records atomic.Int64
	bytes   atomic.Int64
	// lastBroadcast is when the tree last gossiped (Unix ns); tests use it
	// to wait for quiet gossip.
	lastBroadcast atomic.Int64

	quit     chan struct{} // closed when the tree stops
	quitOnce sync.Once
	wg       sync.WaitGroup // the loop, the senders, the watchers
	wake     chan struct{}
	sendq    chan outMsg
	// queued counts the messages in sendq and in the sender's hands. The
	// loop sends a message itself only while it is zero, so that a
	// message never overtakes an earlier one to the same peer.
	queued atomic.Int64

	// Lock order: mu, then a Watcher's mu.
	mu struct {
		sync.Mutex
		closed bool
		queue  []input
		bytes  int
	}

	// Owned by the loop goroutine.
	core     *core
	watchers []*Watcher
	replies  []reply
}

// input is one unit of work for the loop.
type input struct {
	from  string
	data  []byte
	state bool // a push/pull share rather than a message
	op    *op
}

type op struct {
	kind  opKind
	name  string
	value []byte
	bo    bindOptions
	watch *Watcher
	done  chan error
}

type reply struct {
	done chan error
	err  error
}

// Bounds of the loop's inbox: past them, messages from peers are dropped
// and counted (anti-entropy repairs what they carried).
const (
	maxQueueBytes = 64 << 20
	maxQueueItems = 1 << 16
	numSenders    = 4
	sendQueueLen  = 1024
	chunkBytes    = 1 << 20
	tickInterval  = 100 * time.Millisecond
	initialPeers  = 3
)

// New starts this node's copy of the naming tree on cluster: it registers
// the membership channel Options.Channel, subscribes to member events, and
// asks a few peers for their digests to fetch the existing tree. It does
// no blocking I/O: New returns at once and the tree fills in the
// background (Watch shows it arriving). Call Close to stop it.
func New(cluster *membership.Cluster, opts Options) (*Tree, error) {
	if cluster == nil {
		return nil, fmt.Errorf("%w: cluster is nil", ErrInvalidOptions)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Tree{
		cluster: cluster, opts: o, self: cluster.Name(),
		log:   o.Logger.With("node", cluster.Name()),
		quit:  make(chan struct{}),
		wake:  make(chan struct{}, 1),
		sendq: make(chan outMsg, sendQueueLen),
	}
	ch, err := cluster.Channel(o.Channel, handler{t})
	if err != nil {
		return nil, fmt.Errorf("naming: register channel %q: %w", o.Channel, err)
	}
	t.ch = ch
	inc := uint64(time.Now().UnixNano())
	t.core = newCore(t.self, inc, o, time.Now, &t.stats, ch.MaxBroadcast())
	t.core.log = t.log
	t.root.Store(t.core.root)
	self := map[string]membership.Member{t.self: cluster.LocalMember()}
	t.core.live[t.self] = self[t.self]
	t.members.Store(&self)
	t.publishDigest()
	t.sub = cluster.Subscribe()

	var peers []string
	for _, m := range cluster.Members() {
		if m.Name != t.self {
			peers = append(peers, m.Name)
		}
	}
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	peers = peers[:min(len(peers), initialPeers)]

	t.wg.Add(1 + numSenders)
	go t.loop(peers)
	for range numSenders {
		go t.sender()
	}
	t.log.Debug("naming tree started", "incarnation", inc)
	return t, nil
}

// State returns the lifecycle state.
func (t *Tree) State() TreeState {
	select {
	case <-t.quit:
		return TreeClosed
	default:
		return TreeRunning
	}
}

// Close stops the tree: it tells the peers (best effort) that this node's
// bindings are gone, stops every goroutine and watcher, and waits for
// them. Bindings of this node disappear from the other nodes' trees. Safe
// to call more than once.
func (t *Tree) Close() error {
	t.mu.Lock()
	t.mu.closed = true
	t.mu.Unlock()
	t.stop()
	t.wg.Wait()
	return nil
}

func (t *Tree) stop() { t.quitOnce.Do(func() { close(t.quit) }) }

// ---- reads ----

// Lookup returns the binding of name from this node's copy. It never
// blocks and does not allocate (an unbound name returns ErrNotFound
// unwrapped). The Binding is shared: do not modify its Offers or values.
func (t *Tree) Lookup(name string) (Binding, error) {
	// Normalising costs more than the lookup: only a name not found is
	// normalised, to tell an invalid name from an unbound one.
	if e, ok := t.index.lookup(name); ok {
		return e.b, nil
	}
	if _, err := normalize(name, false); err != nil {
		return Binding{}, err
	}
	return Binding{}, ErrNotFound
}

// Len returns how many names are bound.
func (t *Tree) Len() int { return t.root.Load().Len() }

// List returns the children of the context prefix ("" is the root),
// sorted by name: each bound name directly below it, and each context
// (a name with names below it) once.
func (t *Tree) List(prefix string) ([]Child, error) {
	p, err := normalize(prefix, true)
	if err != nil {
		return nil, err
	}
	seek := p
	if p != "" {
		seek += "/"
	}
	root := t.root.Load().Root()
	var out []Child
	at := func(name string) *Child {
		if i, ok := slices.BinarySearchFunc(out, name, func(c Child, n string) int { return strings.Compare(c.Name, n) }); ok {
			return &out[i]
		} else {
			out = slices.Insert(out, i, Child{Name: name})
			return &out[i]
		}
	}
	it := root.Iterator()
	it.SeekLowerBound([]byte(seek))
	for {
		k, e, ok := it.Next()
		if !ok || !strings.HasPrefix(string(k), seek) {
			break
		}
		rest := string(k[len(seek):])
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			c := at(seek + rest)
			c.Bound, c.Binding = true, e.b
			continue
		}
		child := seek + rest[:i]
		at(child).Context = true
		// Skip the child's subtree: '0' is the byte after '/'.
		it = root.Iterator()
		it.SeekLowerBound([]byte(child + "0"))
	}
	return out, nil
}

// Select returns one live offer of name, chosen by policy (nil means
// RoundRobin shared by the tree). Offers of nodes that this node does not
// see alive are never chosen. It fails with ErrNotFound or ErrNoOffer.
func (t *Tree) Select(name string, policy Policy) (Offer, error) {
	b, err := t.Lookup(name)
	if err != nil {
		return Offer{}, err
	}
	if policy == nil {
		policy = defaultPolicy
	}
	return t.pick(b, policy, nil)
}

var defaultPolicy = RoundRobin()

// Candidates returns the live offers of name as a Policy would see them,
// in node order, in a new slice the caller owns: for a caller that
// chooses by more than a Policy sees (a proxy that reads the request) or
// that tries several in turn. It fails with ErrNotFound or ErrNoOffer.
func (t *Tree) Candidates(name string) ([]Candidate, error) {
	b, err := t.Lookup(name)
	if err != nil {
		return nil, err
	}
	members := *t.members.Load()
	out := make([]Candidate, 0, len(b.Offers))
	for _, of := range b.Offers {
		if c, ok := t.candidate(members, b.Scope, of); ok {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNoOffer, b.Name)
	}
	return out, nil
}

var candPool = sync.Pool{New: func() any { s := make([]Candidate, 0, 8); return &s }}

// candidate is offer as a Policy sees it; false if its node is not
// live. members is a snapshot of t.members.
func (t *Tree) candidate(members map[string]membership.Member, scope Scope, of Offer) (Candidate, bool) {
	c := Candidate{Offer: of}
	if scope == NodeScope {
		m, ok := members[of.Node]
		if !ok {
			return c, false
		}
		c.Member, c.Local = m, of.Node == t.self
	}
	return c, true
}

// pick applies policy to b's live offers, less those exclude rejects.
func (t *Tree) pick(b Binding, policy Policy, exclude []string) (Offer, error) {
	members := *t.members.Load()
	bufp := candPool.Get().(*[]Candidate)
	cands := (*bufp)[:0]
	for _, of := range b.Offers {
		c, ok := t.candidate(members, b.Scope, of)
		if !ok || slices.Contains(exclude, of.Node) {
			continue
		}
		cands = append(cands, c)
	}
	var out Offer
	var err error
	if len(cands) > 0 {
		if i := policy.Pick(cands); i >= 0 && i < len(cands) {
			out = cands[i].Offer
		} else {
			err = fmt.Errorf("%w: %q: the policy chose none of %d offers", ErrNoOffer, b.Name, len(cands))
		}
	} else {
		err = fmt.Errorf("%w: %q", ErrNoOffer, b.Name)
	}
	clear(cands)
	*bufp = cands[:0]
	candPool.Put(bufp)
	return out, err
}

// ---- writes ----

// Bind binds name to value for this node. It fails with ErrNameBound if
// this node already binds the name, or another node does and the name is
// not clusterable (see Clusterable). It returns once the binding is in
// this node's tree; it reaches the other nodes by gossip within about a
// second. If another node bound the same name at the same moment, one of
// the two wins on every node; if it is the other, this node's binding is
// removed and its watchers get an EventConflict.
//
// value is kept, not copied: do not modify it afterwards. If ctx ends
// before Bind returns, the binding may or may not have been made.
func (t *Tree) Bind(ctx context.Context, name string, value []byte, opts ...BindOption) error {
	return t.write(ctx, opBind, name, value, opts)
}

// Rebind binds name to value for this node, replacing this node's
// binding if there is one (for cluster scope: replacing the cluster's
// binding). It fails with ErrNameBound when another node holds the name
// and it is not clusterable, or when the name is bound with the other
// scope.
func (t *Tree) Rebind(ctx context.Context, name string, value []byte, opts ...BindOption) error {
	return t.write(ctx, opRebind, name, value, opts)
}

// Unbind removes this node's binding of name (its offer, for a
// clusterable name), or the cluster-scoped binding of name. It fails with
// ErrNotFound if there is neither. Of the options only Confirmed applies,
// to a node-scoped binding: Unbind then returns once every live member
// has removed it, so that a Bind of the name on any node after Unbind
// returns finds it free.
func (t *Tree) Unbind(ctx context.Context, name string, opts ...BindOption) error {
	return t.write(ctx, opUnbind, name, nil, opts)
}

func (t *Tree) write(ctx context.Context, kind opKind, name string, value []byte, opts []BindOption) error {
	n, err := normalize(name, false)
	if err != nil {
		return err
	}
	bo, err := bindOpts(opts)
	if err != nil {
		return err
	}
	if len(value) > t.opts.MaxValueSize {
		return fmt.Errorf("%w: value of %q is %d bytes, MaxValueSize is %d", ErrTooLarge, n, len(value), t.opts.MaxValueSize)
	}
	return t.do(ctx, &op{kind: kind, name: strings.Clone(n), value: value, bo: bo})
}

func (t *Tree) do(ctx context.Context, o *op) error {
	o.done = make(chan error, 1)
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	t.mu.queue = append(t.mu.queue, input{op: o})
	t.mu.Unlock()
	t.signal()
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.quit:
		return ErrClosed
	}
}

// ---- the loop ----

func (t *Tree) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *Tree) enqueue(in input) {
	t.mu.Lock()
	if t.mu.closed || t.mu.bytes+len(in.data) > maxQueueBytes || len(t.mu.queue) >= maxQueueItems {
		t.mu.Unlock()
		t.stats.dropped.Add(1)
		return
	}
	t.mu.queue = append(t.mu.queue, in)
	t.mu.bytes += len(in.data)
	t.mu.Unlock()
	t.signal()
}

// loop is the one goroutine that changes the tree: it applies local
// operations, peers' messages and member events in arrival order, then
// publishes the new read view and sends what the core asked for.
func (t *Tree) loop(peers []string) {
	defer t.wg.Done()
	defer t.teardown()
	for _, p := range peers {
		t.core.askDigest(p)
	}
	t.publish()
	ticker := time.NewTicker(tickInterval)
	defer ticker.Stop()
	events := t.sub.Events()
	for {
		select {
		case <-t.quit:
			t.core.retire()
			t.flushOut(true)
			return
		case ev, ok := <-events:
			if !ok {
				t.log.Debug("cluster stopped; closing the naming tree")
				return
			}
			t.core.memberEvent(ev)
		case <-t.wake:
			t.drain()
		case <-ticker.C:
			t.core.tick()
		}
		t.publish()
	}
}

func (t *Tree) teardown() {
	t.mu.Lock()
	t.mu.closed = true
	pending := t.mu.queue
	t.mu.queue = nil
	t.mu.Unlock()
	t.stop()
	for _, in := range pending {
		if in.op != nil {
			in.op.done <- ErrClosed
		}
	}
	t.ch.Close()
	t.sub.Close()
}

func (t *Tree) drain() {
	t.mu.Lock()
	batch := t.mu.queue
	t.mu.queue = nil
	t.mu.bytes = 0
	t.mu.Unlock()
	for _, in := range batch {
		switch {
		case in.op != nil:
			t.apply(in.op)
		case in.state:
			t.onState(in.from, in.data)
		default:
			t.onMessage(in.from, in.data)
		}
	}
}

func (t *Tree) apply(o *op) {
	if o.watch != nil {
		o.watch.snap = t.core.root
		t.watchers = append(t.watchers, o.watch)
		t.replies = append(t.replies, reply{done: o.done})
		return
	}
	_, mine := t.core.owners[t.core.self].recs[o.name]
	err := t.core.local(o.kind, o.name, o.value, o.bo)
	if o.bo.confirmed && o.kind == opUnbind && err == nil && mine {
		t.core.startConfirmUnbind(o.name, t.core.owners[t.core.self].tombs[o.name], t.memberNames(), o.done)
		return
	}
	if o.bo.confirmed && o.kind != opUnbind && (err == nil || errors.Is(err, ErrNameBound) && t.core.heldByOther(o.name)) {
		t.core.startConfirm(o.name, t.memberNames(), o.done) // answered later, from core.answers
		return
	}
	t.replies = append(t.replies, reply{done: o.done, err: err})
}

// memberNames returns the live members as membership knows them now (the
// core's own view follows member events and may lag).
func (t *Tree) memberNames() []string {
	var members []string
	for _, m := range t.cluster.Members() {
		members = append(members, m.Name)
	}
	return members
}

func (t *Tree) onMessage(from string, data []byte) {
	typ, v, err := decodeMsg(data, t.opts.MaxValueSize)
	if err != nil {
		t.countBad(from, err)
		return
	}
	if typ == msgDigest || typ == msgDigestReq || typ == msgOwnerData || typ == msgClustData {
		t.stats.bytesIn.Add(uint64(len(data)))
	}
	t.core.handle(from, typ, v)
}

func (t *Tree) onState(from string, data []byte) {
	if len(data) == 0 {
		return
	}
	typ, v, err := decodeMsg(data, t.opts.MaxValueSize)
	if err == nil && typ != msgDigest {
		err = fmt.Errorf("%w: message type %d in state exchange", errForeign, typ)
	}
	if err != nil {
		t.countBad(from, err)
		return
	}
	t.core.mergeDigest(from, v.(*digestMsg))
}

func (t *Tree) countBad(from string, err error) {
	switch {
	case errors.Is(err, errForeign):
		t.stats.foreign.Add(1)
	case errors.Is(err, errOversized):
		t.stats.oversized.Add(1)
	default:
		t.stats.malformed.Add(1)
	}
	t.log.Debug("dropped a message", "from", from, "err", err)
}

// publish makes the loop's work visible: the new root, the member
// snapshot and digest, watch events, then messages (after the root: a
// peer told that this copy holds a record, as a confirmation's answer
// does, may look it up here at once), and the replies to local
// operations (last, so that a Lookup after Bind returns sees the
// binding).
func (t *Tree) publish() {
	c := t.core
	if root := c.flush(); root != nil {
		t.root.Store(root)
	}
	t.index.apply(c.changed)
	clear(c.changed)
	c.changed = c.changed[:0]
	if c.membersDirty {
		c.membersDirty = false
		m := make(map[string]membership.Member, len(c.live))
		for k, v := range c.live {
			m[k] = v
		}
		t.members.Store(&m)
	}
	if c.digestDirty {
		t.publishDigest()
	}
	t.records.Store(int64(c.nrecs))
	t.bytes.Store(c.nbytes)
	if len(c.events) > 0 {
		t.watchers = slices.DeleteFunc(t.watchers, (*Watcher).isClosed)
		for _, ev := range c.events {
			for _, w := range t.watchers {
				if under(ev.Name, w.prefix) {
					w.push(ev)
				}
			}
		}
		clear(c.events)
		c.events = c.events[:0]
	}
	t.flushOut(false)
	t.replies = append(t.replies, c.answers...)
	clear(c.answers)
	c.answers = c.answers[:0]
	for _, r := range t.replies {
		r.done <- r.err
	}
	clear(t.replies)
	t.replies = t.replies[:0]
}

func (t *Tree) publishDigest() {
	t.core.digestDirty = false
	raw, err := encodeMsg(msgDigest, t.core.digest())
	if err != nil {
		t.log.Error("encode digest", "err", err)
		return
	}
	t.digest.Store(&raw)
}

// flushOut sends the core's outgoing messages: broadcasts at once (they
// only queue), direct messages through the senders, dropping them when
// the senders are that far behind.
func (t *Tree) flushOut(final bool) {
	c := t.core
	for _, m := range c.out {
		if m.to == "" {
			if err := t.ch.BroadcastKeyed(m.key, m.raw); err != nil {
				t.stats.sendErrors.Add(1)
				t.log.Debug("broadcast", "err", err)
			}
			t.stats.broadcasts.Add(1)
			t.lastBroadcast.Store(time.Now().UnixNano())
			continue
		}
		if final {
			continue
		}
		// A small message goes out from here when it can without waiting
		// (a connection to the peer is open): a hand-off to the sender
		// goroutine costs a wake-up on each side of every confirmation.
		if m.raw != nil && t.queued.Load() == 0 && t.ch.TrySend(m.to, m.raw) == nil {
			t.stats.bytesOut.Add(uint64(len(m.raw)))
			continue
		}
		t.queued.Add(1)
		select {
		case t.sendq <- m:
		default:
			t.queued.Add(-1)
			t.stats.dropped.Add(1)
		}
	}
	clear(c.out)
	c.out = c.out[:0]
}

// sender sends direct messages, splitting large answers into chunks.
func (t *Tree) sender() {
	defer t.wg.Done()
	for {
		select {
		case <-t.quit:
			return
		case m := <-t.sendq:
			t.send(m)
			t.queued.Add(-1)
		}
	}
}

func (t *Tree) send(m outMsg) {
	var parts [][]byte
	switch {
	case m.raw != nil:
		parts = [][]byte{m.raw}
	case m.owner != nil:
		parts = chunkOwner(m.owner)
	case m.clust != nil:
		parts = chunkClust(m.clust)
	}
	for _, p := range parts {
		select {
		case <-t.quit:
			return
		default:
		}
		err := t.sendRetry(m.to, p)
		if err != nil {
			t.stats.sendErrors.Add(1)
			t.log.Debug("send", "to", m.to, "err", err)
			return
		}
		t.stats.bytesOut.Add(uint64(len(p)))
	}
}

// sendRetry sends one direct message. A peer that this node's member
// list does not show alive yet (it just came back: a healed partition)
// gets a few more tries over about two seconds.
func (t *Tree) sendRetry(to string, p []byte) error {
	var err error
	for attempt := range 4 {
		if attempt > 0 {
			select {
			case <-t.quit:
				return err
			case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.FetchTimeout)
		err = t.ch.Send(ctx, to, p)
		cancel()
		if !errors.Is(err, membership.ErrUnknownMember) {
			return err
		}
	}
	return err
}

func recWireSize(r *recWire) int { return len(r.N) + len(r.X) + 48 }

func chunkOwner(m *ownerDataMsg) [][]byte {
	var parts [][]byte
	recs, seq := m.Recs, 0
	for {
		n, size := 0, 0
		for n < len(recs) && (n == 0 || size+recWireSize(&recs[n]) <= chunkBytes) {
			size += recWireSize(&recs[n])
			n++
		}
		part := *m
		part.Recs, part.Seq, part.Last = recs[:n], seq, n == len(recs)
		raw, err := encodeMsg(msgOwnerData, &part)
		if err != nil {
			return nil
		}
		parts = append(parts, raw)
		recs, seq = recs[n:], seq+1
		if len(recs) == 0 {
			return parts
		}
	}
}

func chunkClust(m *clustDataMsg) [][]byte {
	var parts [][]byte
	recs := m.Recs
	for len(recs) > 0 {
		n, size := 0, 0
		for n < len(recs) && (n == 0 || size+len(recs[n].N)+len(recs[n].X)+48 <= chunkBytes) {
			size += len(recs[n].N) + len(recs[n].X) + 48
			n++
		}
		raw, err := encodeMsg(msgClustData, &clustDataMsg{Recs: recs[:n]})
		if err != nil {
			return nil
		}
		parts = append(parts, raw)
		recs = recs[n:]
	}
	return parts
}

// handler adapts the Tree to the membership channel. memberlist calls it
// from its goroutines: it only queues work for the loop.
type handler struct{ t *Tree }

var _ membership.Handler = handler{}

func (h handler) HandleMessage(from string, msg []byte) {
	h.t.enqueue(input{from: from, data: msg})
}

func (h handler) LocalState(join bool) []byte {
	if p := h.t.digest.Load(); p != nil {
		return *p
	}
	return nil
}

func (h handler) MergeRemoteState(from string, state []byte, join bool) {
	h.t.enqueue(input{from: from, data: state, state: true})
}
