package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/troupe-go/troupe/internal/wire"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
)

// Defaults of PinOptions.
const (
	DefaultPinPrefix   = "troupe/pins"
	DefaultHTTPTag     = "troupe.http"
	DefaultPinChannel  = "troupe.pins"
	DefaultPreferDelay = 500 * time.Millisecond
)

// PinOptions configure Pins. The zero value is usable.
type PinOptions struct {
	// Prefix is where pins live in the naming tree: a pin of key k is the
	// name Prefix/k, and a singleton s is Prefix/singletons/s. Every node
	// must use the same. Default "troupe/pins".
	Prefix string

	// Channel is the membership channel on which nodes ask each other to
	// take a pin (PinOn). Default "troupe.pins".
	Channel string

	// HTTPTag is the member tag holding a node's HTTP address ("ip:port"),
	// to which Handler forwards requests for the keys it owns. Default
	// "troupe.http".
	HTTPTag string

	// QuorumWindow: a node takes a pin or starts a singleton only while it
	// sees at least half of the members that were alive within the last
	// QuorumWindow (itself included; members that left do not count), and
	// gives up what it holds when it stops seeing them. Default 1 min.
	QuorumWindow time.Duration

	// PreferDelay is how long a registered node that is not the preferred
	// one (see PreferRole, PreferNode) waits, once a singleton has no
	// owner, before it claims it anyway. Default 500 ms.
	PreferDelay time.Duration

	// Logger receives pins lost and singletons started and stopped at
	// Info. Default: discard.
	Logger *slog.Logger
}

// Validate reports the first problem with o, after applying defaults.
func (o PinOptions) Validate() error {
	o = o.withDefaults()
	if strings.Trim(o.Prefix, "/") == "" {
		return fmt.Errorf("%w: empty pin Prefix", ErrInvalidOptions)
	}
	if o.QuorumWindow < minTimeout || o.PreferDelay < 0 {
		return fmt.Errorf("%w: QuorumWindow %v must be at least %v and PreferDelay %v not negative",
			ErrInvalidOptions, o.QuorumWindow, minTimeout, o.PreferDelay)
	}
	return nil
}

func (o PinOptions) withDefaults() PinOptions {
	if o.Prefix == "" {
		o.Prefix = DefaultPinPrefix
	}
	o.Prefix = strings.Trim(o.Prefix, "/")
	if o.Channel == "" {
		o.Channel = DefaultPinChannel
	}
	if o.HTTPTag == "" {
		o.HTTPTag = DefaultHTTPTag
	}
	if o.QuorumWindow == 0 {
		o.QuorumWindow = DefaultQuorumWindow
	}
	if o.PreferDelay == 0 {
		o.PreferDelay = DefaultPreferDelay
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Pin is a key's owner. Token is the owner's fencing token: it grows each
// time the key gets a new owner that saw the previous one (it is the
// naming binding's Claimed), so that a resource can refuse writes from an
// older owner still running somewhere.
type Pin struct {
	Key   string
	Owner string
	Token uint64
}

// Pins pins keys and singleton services to one node at a time, on the
// naming tree. Create it with NewPins; stop it with Leave or Shutdown.
type Pins struct {
	cluster *membership.Cluster
	tree    *naming.Tree
	opts    PinOptions
	self    string
	log     *slog.Logger
	ch      *membership.Channel
	sub     *membership.Subscription
	proxy   *http.Transport

	ctx    context.Context // ends at Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		closed     bool
		failedAt   map[string]time.Time // members seen failing, for the quorum
		joinedAt   time.Time            // when a member last joined (or came back)
		owned      map[string]struct{}  // keys this node pinned
		calls      map[uint64]chan pinMsg
		nextCall   uint64
		singletons map[string]*Singleton
		watchers   map[*PinWatcher]struct{}
		busy       int // remote claims being served
	}
}

// NewPins starts pinning on cluster and tree (which must run on the same
// cluster). ctx bounds only the start.
func NewPins(ctx context.Context, cluster *membership.Cluster, tree *naming.Tree, opts PinOptions) (*Pins, error) {
	if cluster == nil || tree == nil {
		return nil, fmt.Errorf("%w: nil cluster or tree", ErrInvalidOptions)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	p := &Pins{cluster: cluster, tree: tree, opts: o, self: cluster.Name(),
		log:   o.Logger.With("node", cluster.Name()),
		proxy: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: time.Minute},
	}
	p.mu.failedAt = map[string]time.Time{}
	p.mu.owned = map[string]struct{}{}
	p.mu.calls = map[uint64]chan pinMsg{}
	p.mu.singletons = map[string]*Singleton{}
	p.mu.watchers = map[*PinWatcher]struct{}{}
	ch, err := cluster.Channel(o.Channel, pinHandler{p})
	if err != nil {
		return nil, fmt.Errorf("replication: pins channel %q: %w", o.Channel, err)
	}
	p.ch = ch
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.sub = cluster.Subscribe()
	p.wg.Go(p.eventLoop)
	return p, nil
}

// name is key's name in the tree.
func (p *Pins) name(key string) string { return p.opts.Prefix + "/" + key }

// PinOption modifies one Pin.
type PinOption func(*pinOptions)

type pinOptions struct {
	service string
	policy  naming.Policy
}

// PinOn places a new pin on a node chosen by policy among the nodes that
// offer service in the naming tree (a clusterable name), instead of on the
// calling node. That node takes the pin as if it had called Pin itself.
func PinOn(service string, policy naming.Policy) PinOption {
	return func(o *pinOptions) { o.service, o.policy = service, policy }
}

// Pin claims key for this node (or, with PinOn, for a node chosen among a
// service's offers) unless it already has an owner, and returns the owner.
// When nodes pin one key at the same moment, each call returns the same
// single owner. It fails with ErrNoQuorum on a node that sees less than
// half of the cluster, and with the context's error when it cannot learn
// the answer of every live member in time: a member that crashed but is
// not yet declared failed holds the answer back until failure detection
// declares it (a few seconds), so give ctx a deadline that allows for it.
func (p *Pins) Pin(ctx context.Context, key string, opts ...PinOption) (Pin, error) {
	var po pinOptions
	for _, f := range opts {
		f(&po)
	}
	if p.isClosed() {
		return Pin{}, ErrClosed
	}
	// Even when this copy shows an owner, claim: a Confirmed Bind that
	// another node's binding refuses asks every member who holds the key,
	// so that a racing Pin is answered with the winner, not with whichever
	// binding reached this copy first.
	_, err := p.Owner(key)
	if err != nil && !errors.Is(err, ErrNotPinned) {
		return Pin{}, err
	}
	if po.service != "" && err != nil {
		off, err := p.tree.Select(po.service, po.policy)
		if err != nil {
			return Pin{}, fmt.Errorf("replication: pin %q on %q: %w", key, po.service, err)
		}
		if off.Node != p.self {
			return p.pinRemote(ctx, off.Node, key)
		}
	}
	return p.claim(ctx, key)
}

// claim pins key on this node.
func (p *Pins) claim(ctx context.Context, key string) (Pin, error) {
	if !p.quorum() {
		return Pin{}, fmt.Errorf("%w: pin %q", ErrNoQuorum, key)
	}
	name := p.name(key)
	for {
		err := p.tree.Bind(ctx, name, nil, naming.Confirmed())
		switch {
		case err == nil:
			p.mu.Lock()
			p.mu.owned[key] = struct{}{}
			p.mu.Unlock()
		case errors.Is(err, naming.ErrNameBound):
		case errors.Is(err, naming.ErrInvalidName):
			return Pin{}, fmt.Errorf("%w: %w", ErrInvalidKey, err)
		default:
			return Pin{}, fmt.Errorf("replication: pin %q: %w", key, err)
		}
		if pin, err := p.Owner(key); err == nil {
			return pin, nil
		}
		// Bound elsewhere, then released or lost before we looked: again.
		if err := ctx.Err(); err != nil {
			return Pin{}, err
		}
	}
}

// Owner returns key's owner from this node's copy of the tree: no network,
// no allocation. A node that membership declared failed or gone is never
// the owner. ErrNotPinned when key has no owner.
func (p *Pins) Owner(key string) (Pin, error) {
	b, err := p.tree.Lookup(p.name(key))
	if err != nil {
		if errors.Is(err, naming.ErrNotFound) {
			return Pin{}, ErrNotPinned
		}
		return Pin{}, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	of := b.Offers[0]
	return Pin{Key: key, Owner: of.Node, Token: of.Claimed}, nil
}

// Release gives up this node's pin of key; the next Pin places it anew.
// ErrNotOwner when this node does not own key.
func (p *Pins) Release(ctx context.Context, key string) error {
	if p.isClosed() {
		return ErrClosed
	}
	pin, err := p.Owner(key)
	if err != nil || pin.Owner != p.self {
		return fmt.Errorf("%w: %q", ErrNotOwner, key)
	}
	p.mu.Lock()
	delete(p.mu.owned, key)
	p.mu.Unlock()
	if err := p.tree.Unbind(ctx, p.name(key)); err != nil && !errors.Is(err, naming.ErrNotFound) {
		return fmt.Errorf("replication: release %q: %w", key, err)
	}
	return nil
}

// Leave releases every pin this node owns and hands its singletons over
// (stopping them first), then shuts down like Shutdown.
func (p *Pins) Leave(ctx context.Context) error {
	if p.isClosed() {
		return ErrClosed
	}
	var errs []error
	p.mu.Lock()
	singles := make([]*Singleton, 0, len(p.mu.singletons))
	for _, s := range p.mu.singletons {
		singles = append(singles, s)
	}
	p.mu.Unlock()
	for _, s := range singles {
		s.Stop()
	}
	errs = append(errs, p.releaseAll(ctx))
	p.Shutdown()
	return errors.Join(errs...)
}

// releaseAll unbinds every pin this node owns.
func (p *Pins) releaseAll(ctx context.Context) error {
	p.mu.Lock()
	keys := make([]string, 0, len(p.mu.owned))
	for k := range p.mu.owned {
		keys = append(keys, k)
	}
	clear(p.mu.owned)
	p.mu.Unlock()
	var errs []error
	for _, k := range keys {
		if err := p.tree.Unbind(ctx, p.name(k)); err != nil && !errors.Is(err, naming.ErrNotFound) {
			errs = append(errs, fmt.Errorf("release %q: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// Shutdown stops every singleton running here (their contexts end, and
// Shutdown waits for them to return), every watcher and goroutine. It
// does not unbind this node's pins: they go when the node's naming tree
// closes or the node fails or leaves. Safe to call twice.
func (p *Pins) Shutdown() {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return
	}
	p.mu.closed = true
	for _, ch := range p.mu.calls {
		close(ch)
	}
	clear(p.mu.calls)
	ws := make([]*PinWatcher, 0, len(p.mu.watchers))
	for w := range p.mu.watchers {
		ws = append(ws, w)
	}
	p.mu.Unlock()
	for _, w := range ws {
		w.Close()
	}
	p.cancel()
	p.sub.Close()
	p.ch.Close()
	p.wg.Wait()
	p.proxy.CloseIdleConnections()
}

func (p *Pins) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.closed
}

// ---- quorum ----

// quorum reports whether this node sees at least half of the members that
// were alive within the last QuorumWindow, itself included.
func (p *Pins) quorum() bool {
	live := p.cluster.NumMembers()
	p.mu.Lock()
	defer p.mu.Unlock()
	base := live
	for name, at := range p.mu.failedAt {
		if time.Since(at) < p.opts.QuorumWindow {
			base++
		} else {
			delete(p.mu.failedAt, name)
		}
	}
	return 2*live >= base
}

// eventLoop follows member events: failures count against the quorum,
// and every event may change what a singleton should do. A node that
// loses the quorum gives up its pins.
func (p *Pins) eventLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	had := true
	for {
		select {
		case <-p.ctx.Done():
			return
		case ev, ok := <-p.sub.Events():
			if !ok {
				return
			}
			p.mu.Lock()
			switch ev.Type {
			case membership.EventFail:
				p.mu.failedAt[ev.Member.Name] = time.Now()
			case membership.EventJoin, membership.EventLeave:
				delete(p.mu.failedAt, ev.Member.Name)
			}
			if ev.Type == membership.EventJoin && ev.Member.Name != p.self {
				p.mu.joinedAt = time.Now()
			}
			p.mu.Unlock()
		case <-tick.C:
		}
		q := p.quorum()
		if had && !q {
			p.log.Warn("lost the quorum: releasing pins and stopping singletons", "members", p.cluster.NumMembers())
			ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
			if err := p.releaseAll(ctx); err != nil {
				p.log.Warn("release pins", "err", err)
			}
			cancel()
		}
		had = q
		p.wakeSingletons()
	}
}

// joinSettle is how long after a member joins (or comes back, as when a
// partition heals) singletons wait before claiming: the naming tree
// fetches the newcomer's bindings at once, and a claim made before they
// arrive could start a second instance that then loses to the earlier
// claim.
const joinSettle = time.Second

// settling returns how long claims should still wait after the last join.
func (p *Pins) settling() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.joinedAt.IsZero() {
		return 0
	}
	return time.Until(p.mu.joinedAt.Add(joinSettle))
}

// ---- remote claims (PinOn) ----

// pinMsg is a request to take a pin, or its answer, on the pins channel.
type pinMsg struct {
	Q     uint64 `codec:"q"`
	Reply bool   `codec:"r,omitempty"`
	Key   string `codec:"k"`
	Owner string `codec:"o,omitempty"`
	Token uint64 `codec:"t,omitempty"`
	Err   string `codec:"e,omitempty"`
}

// maxRemoteClaims bounds the remote claims one node serves at once;
// beyond it requests are refused (the caller may retry).
const maxRemoteClaims = 64

func (p *Pins) pinRemote(ctx context.Context, node, key string) (Pin, error) {
	ch := make(chan pinMsg, 1)
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return Pin{}, ErrClosed
	}
	p.mu.nextCall++
	q := p.mu.nextCall
	p.mu.calls[q] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.mu.calls, q)
		p.mu.Unlock()
	}()
	raw, err := wire.Marshal(pinMsg{Q: q, Key: key})
	if err != nil {
		return Pin{}, err
	}
	if err := p.ch.Send(ctx, node, raw); err != nil {
		return Pin{}, fmt.Errorf("%w: ask %s to pin %q: %w", ErrUnavailable, node, key, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return Pin{}, ErrClosed
		}
		if m.Err != "" {
			return Pin{}, fmt.Errorf("replication: %s could not pin %q: %s", node, key, m.Err)
		}
		return Pin{Key: key, Owner: m.Owner, Token: m.Token}, nil
	case <-ctx.Done():
		return Pin{}, ctx.Err()
	}
}

type pinHandler struct{ p *Pins }

func (h pinHandler) HandleMessage(from string, raw []byte) {
	p := h.p
	var m pinMsg
	if err := wire.Unmarshal(raw, &m); err != nil || m.Key == "" {
		p.log.Debug("dropped a malformed pins message", "from", from, "err", err)
		return
	}
	if m.Reply {
		p.mu.Lock()
		ch := p.mu.calls[m.Q]
		delete(p.mu.calls, m.Q)
		p.mu.Unlock()
		if ch != nil {
			ch <- m
		}
		return
	}
	p.mu.Lock()
	if p.mu.closed || p.mu.busy >= maxRemoteClaims {
		p.mu.Unlock()
		p.log.Debug("dropped a pin request: closed or busy", "from", from, "key", m.Key)
		return // the caller's context ends its wait
	}
	p.mu.busy++
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			p.mu.busy--
			p.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(p.ctx, DefaultCallTimeout)
		defer cancel()
		r := pinMsg{Q: m.Q, Reply: true, Key: m.Key}
		if pin, err := p.claim(ctx, m.Key); err != nil {
			r.Err = err.Error()
		} else {
			r.Owner, r.Token = pin.Owner, pin.Token
		}
		p.answer(from, r)
	}()
}

func (p *Pins) answer(to string, m pinMsg) {
	raw, err := wire.Marshal(m)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, DefaultCallTimeout)
	defer cancel()
	if err := p.ch.Send(ctx, to, raw); err != nil {
		p.log.Debug("answer a pin request", "to", to, "err", err)
	}
}

func (h pinHandler) LocalState(bool) []byte                { return nil }
func (h pinHandler) MergeRemoteState(string, []byte, bool) {}

// ---- watching ----

// PinEventType says what happened to a pin.
type PinEventType int

const (
	// PinAcquired: the key has a new owner.
	PinAcquired PinEventType = iota + 1
	// PinReleased: the owner released the key (Release, Leave, or it
	// lost the quorum).
	PinReleased
	// PinLost: the owner failed or left, or (after a partition healed)
	// lost the key to an earlier claim. Pin is the lost pin: Owner names
	// the node that held it.
	PinLost
)

func (t PinEventType) String() string {
	switch t {
	case PinAcquired:
		return "acquired"
	case PinReleased:
		return "released"
	case PinLost:
		return "lost"
	}
	return fmt.Sprintf("PinEventType(%d)", int(t))
}

// PinEvent is one change of a pin.
type PinEvent struct {
	Type   PinEventType
	Pin    Pin
	Reason string // for PinLost
}

// PinWatcher delivers the pin events under a key prefix, in order.
type PinWatcher struct {
	p      *Pins
	w      *naming.Watcher
	ctx    context.Context
	events chan PinEvent
	done   chan struct{}
	once   sync.Once
}

// Watch tells of every pin acquired, released or lost under prefix
// ("" for all keys), starting with a PinAcquired for each key pinned now.
// The watcher stops when ctx ends, on Close, or at Shutdown; its Events
// channel is then closed. A watcher whose reader falls far behind is
// dropped (its channel closes early; see naming.ErrSlowWatcher).
func (p *Pins) Watch(ctx context.Context, prefix string) (*PinWatcher, error) {
	full := p.opts.Prefix
	if prefix != "" {
		full = p.name(prefix)
	}
	w, err := p.tree.Watch(ctx, full)
	if err != nil {
		return nil, fmt.Errorf("replication: watch pins %q: %w", prefix, err)
	}
	pw := &PinWatcher{p: p, w: w, ctx: ctx, events: make(chan PinEvent, 64), done: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		w.Close()
		return nil, ErrClosed
	}
	p.mu.watchers[pw] = struct{}{}
	p.wg.Go(pw.run)
	return pw, nil
}

// Events returns the channel of events.
func (w *PinWatcher) Events() <-chan PinEvent { return w.events }

// Close stops the watcher.
func (w *PinWatcher) Close() {
	w.once.Do(func() { close(w.done) })
	w.w.Close()
}

func (w *PinWatcher) run() {
	defer close(w.events)
	defer func() {
		w.p.mu.Lock()
		delete(w.p.mu.watchers, w)
		w.p.mu.Unlock()
	}()
	skip := w.p.opts.Prefix + "/" + singletonDir + "/"
	for ev := range w.w.Events() {
		key, ok := strings.CutPrefix(ev.Name, w.p.opts.Prefix+"/")
		if !ok || strings.HasPrefix(ev.Name, skip) {
			continue
		}
		for _, pe := range w.p.translate(key, ev) {
			select { // beyond 64 queued here, the naming watcher's own buffer absorbs bursts
			case w.events <- pe:
			case <-w.done:
				return
			case <-w.ctx.Done():
				return
			}
		}
	}
}

// translate turns a naming event on a pin's name into pin events.
func (p *Pins) translate(key string, ev naming.Event) []PinEvent {
	pinOf := func(b naming.Binding) Pin {
		if len(b.Offers) == 0 {
			return Pin{Key: key}
		}
		return Pin{Key: key, Owner: b.Offers[0].Node, Token: b.Offers[0].Claimed}
	}
	gone := func(old Pin) PinEvent {
		if m, ok := p.cluster.Member(old.Owner); ok && m.State == membership.StateAlive {
			return PinEvent{Type: PinReleased, Pin: old}
		}
		return PinEvent{Type: PinLost, Pin: old, Reason: fmt.Sprintf("owner %s failed or left", old.Owner)}
	}
	switch ev.Type {
	case naming.EventBound:
		return []PinEvent{{Type: PinAcquired, Pin: pinOf(ev.Binding)}}
	case naming.EventUnbound:
		return []PinEvent{gone(pinOf(ev.Old))}
	case naming.EventRebound:
		old, cur := pinOf(ev.Old), pinOf(ev.Binding)
		if old.Owner == cur.Owner && old.Token == cur.Token {
			return nil
		}
		return []PinEvent{gone(old), {Type: PinAcquired, Pin: cur}}
	case naming.EventConflict:
		winner := pinOf(ev.Binding)
		return []PinEvent{{Type: PinLost, Pin: pinOf(ev.Old), Reason: fmt.Sprintf("an earlier claim by %s won", winner.Owner)}}
	}
	return nil
}

// liveOffers returns the offers of name whose node membership sees alive,
// sorted by node.
func (p *Pins) liveOffers(name string) []membership.Member {
	b, err := p.tree.Lookup(name)
	if err != nil {
		return nil
	}
	var out []membership.Member
	for _, of := range b.Offers {
		if m, ok := p.cluster.Member(of.Node); ok && m.State == membership.StateAlive {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b membership.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}
