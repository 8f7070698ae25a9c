package pins

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

	"github.com/troupe-go/troupe/internal/quorum"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
)

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
// naming tree. Create it with New; stop it with Leave or Shutdown.
type Pins struct {
	cluster *membership.Cluster
	tree    *naming.Tree
	opts    Options
	self    string
	log     *slog.Logger
	ch      *membership.Channel
	sub     *membership.Subscription
	proxy   *http.Transport
	// failures are the members seen failing, for the quorum.
	failures *quorum.Failures
	lease    leaseState
	stats    counters

	ctx    context.Context // ends at Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		closed     bool
		joinedAt   time.Time                // when a member last joined (or came back)
		owned      map[string]struct{}      // keys this node pinned
		claiming   map[string]chan struct{} // names of claims under way; closed when each ends
		singletons map[string]*Singleton
		watchers   map[*Watcher]struct{}
		busy       int // remote claims being served
	}
}

// New starts pinning on cluster and tree (which must run on the same
// cluster). ctx bounds only the start.
func New(ctx context.Context, cluster *membership.Cluster, tree *naming.Tree, opts Options) (*Pins, error) {
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
		proxy: newForwardTransport(o),
	}
	p.failures = quorum.NewFailures(o.QuorumWindow)
	p.mu.owned = map[string]struct{}{}
	p.mu.claiming = map[string]chan struct{}{}
	p.mu.singletons = map[string]*Singleton{}
	p.mu.watchers = map[*Watcher]struct{}{}
	ch, err := cluster.Channel(o.Channel, handler{p}, membership.WithErrors(remoteErrors...))
	if err != nil {
		return nil, fmt.Errorf("pins: pins channel %q: %w", o.Channel, err)
	}
	p.ch = ch
	err = cluster.UpdateMeta(ctx, func(m *membership.Meta) {
		if m.Tags == nil {
			m.Tags = map[string]string{}
		}
		m.Tags[TagKey] = "1"
	})
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("pins: publish member tag: %w", err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.sub = cluster.Subscribe()
	p.wg.Go(p.eventLoop)
	p.wg.Go(p.heartbeat)
	return p, nil
}

// checkKey refuses a key that names no pin: the empty key would pin the
// prefix itself.
func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if _, err := naming.NormalizeName(key); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return nil
}

// name is key's name in the tree.
func (p *Pins) name(key string) string { return p.opts.Prefix + "/" + key }

// Option modifies one Pin.
type Option func(*pinOptions)

type pinOptions struct {
	service string
	policy  naming.Policy
}

// On places a new pin on a node chosen by policy among the nodes that
// offer service in the naming tree (a clusterable name), instead of on the
// calling node. That node takes the pin as if it had called Pin itself.
func On(service string, policy naming.Policy) Option {
	return func(o *pinOptions) { o.service, o.policy = service, policy }
}

// Pin claims key for this node (or, with On, for a node chosen among a
// service's offers) unless it already has an owner, and returns the owner.
// When nodes pin one key at the same moment, each call returns the same
// single owner. It fails with ErrNoQuorum on a node that does not hold
// the quorum (see Options.QuorumWindow), and with the context's error when it cannot learn
// the answer of every live member in time: a member that crashed but is
// not yet declared failed holds the answer back until failure detection
// declares it (a few seconds), so give ctx a deadline that allows for it.
func (p *Pins) Pin(ctx context.Context, key string, opts ...Option) (Pin, error) {
	var po pinOptions
	for _, f := range opts {
		f(&po)
	}
	if p.isClosed() {
		return Pin{}, ErrClosed
	}
	if err := checkKey(key); err != nil {
		return Pin{}, err
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
			return Pin{}, fmt.Errorf("pins: pin %q on %q: %w", key, po.service, err)
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
		if err := p.waitClaim(ctx); err != nil {
			return Pin{}, err
		}
		if !p.renewLease() {
			return Pin{}, fmt.Errorf("%w: pin %q: no quorum answered within the owner lease", ErrNoQuorum, key)
		}
		err := p.bindClaim(ctx, name)
		var bound *naming.BoundError
		switch {
		case err == nil:
			p.mu.Lock()
			p.mu.owned[key] = struct{}{}
			p.mu.Unlock()
			p.stats.claims.Add(1)
		case errors.Is(err, errClaimRaced):
			continue // waitClaim waits out the owner lease first
		case errors.As(err, &bound):
			// The winner as the members answered: this copy may still
			// show a binding they found gone.
			p.log.Debug("pin held elsewhere", "key", key, "owner", bound.Node, "token", bound.Claimed)
			return Pin{Key: key, Owner: bound.Node, Token: bound.Claimed}, nil
		case errors.Is(err, naming.ErrNameBound):
		case errors.Is(err, naming.ErrInvalidName):
			return Pin{}, fmt.Errorf("%w: %w", ErrInvalidKey, err)
		default:
			return Pin{}, fmt.Errorf("pins: pin %q: %w", key, err)
		}
		pin, err := p.Owner(key)
		if err == nil && pin.Owner == p.self && !p.leaseValid() {
			// Our claim outlived the owner lease (this process was
			// paused, say): it is forfeit, and claimed again.
			if err := p.withdraw(name); err != nil {
				return Pin{}, fmt.Errorf("pins: pin %q: %w", key, err)
			}
			continue
		}
		if err == nil {
			p.log.Debug("pinned", "key", key, "owner", pin.Owner, "token", pin.Token)
			return pin, nil
		}
		// Bound elsewhere, then released or lost before we looked: again.
		if err := ctx.Err(); err != nil {
			return Pin{}, err
		}
	}
}

// waitClaim waits until a claim may be made: OwnerLease after the last
// member failure (see lease.go).
func (p *Pins) waitClaim(ctx context.Context) error {
	d := p.claimWait()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting out the owner lease after a failure: %w", ErrUnavailable, context.Cause(ctx))
	}
}

// Owner returns key's owner from this node's copy of the tree: no network,
// no allocation. A node that membership declared failed or gone is never
// the owner. ErrNotPinned when key has no owner.
func (p *Pins) Owner(key string) (Pin, error) {
	if key == "" {
		return Pin{}, fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
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
	p.stats.releases.Add(1)
	// Confirmed: once Release returns, no member shows the pin, so the
	// next Pin anywhere places the key anew.
	if err := p.tree.Unbind(ctx, p.name(key), naming.Confirmed()); err != nil && !errors.Is(err, naming.ErrNotFound) {
		return fmt.Errorf("pins: release %q: %w", key, err)
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
	p.stats.releases.Add(uint64(len(keys)))
	var errs []error
	for _, k := range keys {
		p.log.Debug("releasing a pin", "key", k)
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
	ws := make([]*Watcher, 0, len(p.mu.watchers))
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

// quorum reports whether this node may act for the cluster
// (internal/quorum): it sees a strict majority of the members alive or
// failed within the last QuorumWindow, itself included, or exactly half
// with the tie-breaker.
//
// Members that failure detection suspects count as lost, as in sessions:
// a node cut off from most of the cluster must not act on the first
// failure it learns of while it still counts a majority.
func (p *Pins) quorum() bool {
	return quorum.Holds(p.voters(true))
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
			switch ev.Type {
			case membership.EventFail:
				if isVoter(ev.Member) {
					p.failures.Failed(ev.Member.Name, time.Now())
				}
			case membership.EventJoin, membership.EventLeave:
				p.failures.Forget(ev.Member.Name)
			}
			p.mu.Lock()
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

// settling returns how long claims should still wait after the last join
// or failure (see waitClaim).
func (p *Pins) settling() time.Duration {
	p.mu.Lock()
	joined := p.mu.joinedAt
	p.mu.Unlock()
	d := p.claimWait()
	if !joined.IsZero() {
		d = max(d, time.Until(joined.Add(joinSettle)))
	}
	return d
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
