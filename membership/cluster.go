package membership

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/troupe-go/troupe/internal/transport"
)

// ClusterState is the lifecycle state of the local node's Cluster.
type ClusterState int

const (
	ClusterRunning  ClusterState = iota // joined or trying to join
	ClusterLeaving                      // Leave is telling the others
	ClusterLeft                         // left gracefully; stopped
	ClusterShutdown                     // stopped without leaving
)

func (s ClusterState) String() string {
	switch s {
	case ClusterRunning:
		return "running"
	case ClusterLeaving:
		return "leaving"
	case ClusterLeft:
		return "left"
	case ClusterShutdown:
		return "shutdown"
	}
	return "ClusterState(" + strconv.Itoa(int(s)) + ")"
}

// Cluster is the local node's membership in a cluster: who else is there,
// what they advertise, and the channels upper layers talk on. Create it
// with New; stop it with Leave or Shutdown. All methods are safe for
// concurrent use.
type Cluster struct {
	cfg   resolved
	name  string
	addr  string // advertised ip:port, fixed for the node's life
	log   *slog.Logger
	ml    *memberlist.Memberlist
	queue *memberlist.TransmitLimitedQueue
	dedup *dedup
	trans *gossipNet // memberlist's packets and streams
	// calls is the node's transport (calls.go); callAddr its published
	// address.
	calls    *transport.Transport
	callAddr string
	// keyring is nil when the cluster is not encrypted. memberlist owns
	// its locking; we keep the pointer for rotation and for upper layers.
	keyring *memberlist.Keyring
	disc    *discovery
	stats   counters

	// ctx is cancelled by Leave and Shutdown; every goroutine of the
	// Cluster watches it and is counted in wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	meta     atomic.Pointer[[]byte]
	conflict atomic.Pointer[error] // set by the merge delegate on a name clash
	// leaveAcks is set while Leave waits for acknowledgements.
	leaveAcks atomic.Pointer[chan string]
	suspects  atomic.Pointer[suspectView] // Suspects' last answer

	// Lock order: mu, then a Subscription's mu. Nothing calls memberlist
	// or user code while holding mu.
	mu struct {
		sync.RWMutex
		state   ClusterState
		meta    Meta
		members map[string]Member // live members, self included
		lost    map[string]lostMember
		leaving map[string]bool // members that announced a graceful leave
		// lastFailure is when a member last failed (LastFailure).
		lastFailure time.Time
		subs        map[*Subscription]struct{}
		channels    map[string]*Channel
	}

	stopOnce sync.Once
}

type lostMember struct {
	addr string
	at   time.Time
}

// minRetransmitMult is the floor of how many times (times log10 N) each
// node transmits a broadcast: a channel's, and memberlist's own (alive,
// suspect, dead and leave messages, metadata updates). memberlist's Local
// profile uses 2, with which a message misses some node often enough that
// it waits for anti-entropy (15 s) to see it: a metadata update shows up
// late, a leave is seen only through failure detection. 4, the LAN value,
// makes that rare at a small cost in bandwidth.
const minRetransmitMult = 4

// maxLost bounds how many failed members' addresses a node keeps retrying.
const maxLost = 1024

// New starts a member: it binds its address, starts gossip, and begins
// discovery. If well-known members are configured it tries them once
// before returning (bounded by ctx); if none answers it keeps trying in the
// background, since a well-known member may start last. New fails with
// ErrNameInUse if a live member already has this node's name.
func New(ctx context.Context, cfg Config) (*Cluster, error) {
	r, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: r, name: r.NodeName, log: r.Logger.With("node", r.NodeName), dedup: newDedup()}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.meta = Meta{Role: r.Role, Group: r.Group, Weight: r.Weight, Tags: r.Tags}
	c.mu.members = map[string]Member{}
	c.mu.lost = map[string]lostMember{}
	c.mu.leaving = map[string]bool{}
	c.mu.subs = map[*Subscription]struct{}{}
	c.mu.channels = map[string]*Channel{}

	// The keyring exists before the transport, whose handshakes read it.
	if len(r.SecretKeys) > 0 {
		if c.keyring, err = memberlist.NewKeyring(r.SecretKeys, r.SecretKeys[0]); err != nil {
			c.cancel()
			return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
	}
	if err := c.startTransport(ctx); err != nil {
		c.cancel()
		return nil, err
	}
	meta, err := encodeMeta(c.mu.meta, c.callAddr)
	if err != nil {
		c.cancel()
		_ = c.calls.Shutdown()
		return nil, err
	}
	c.meta.Store(&meta)
	c.trans, err = newGossipNet(c.ctx, r.bind, r.Faults, c.log)
	if err != nil {
		c.cancel()
		_ = c.calls.Shutdown()
		return nil, err
	}
	adv := r.advertise
	if adv.Port() == 0 {
		adv = netip.AddrPortFrom(adv.Addr(), uint16(c.trans.port))
	}
	c.addr = adv.String()
	mlc, err := c.memberlistConfig(adv)
	if err != nil {
		c.cancel()
		_ = c.trans.Shutdown()
		_ = c.calls.Shutdown()
		return nil, err
	}
	// The queue must exist before memberlist starts delivering messages,
	// and it counts members from our own list, not through c.ml.
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       c.NumMembers,
		RetransmitMult: mlc.RetransmitMult,
	}
	c.ml, err = memberlist.Create(mlc)
	if err != nil {
		c.cancel()
		_ = c.trans.Shutdown()
		_ = c.calls.Shutdown()
		return nil, fmt.Errorf("membership: start memberlist: %w", err)
	}
	c.disc = newDiscovery(c)
	if err := c.disc.initialJoin(ctx); err != nil {
		c.Shutdown()
		return nil, err
	}
	if err := c.disc.start(); err != nil {
		c.Shutdown()
		return nil, err
	}
	if !c.Secure() {
		c.log.Warn("running without cluster keys (Insecure): anyone who can reach this node can join the cluster and read or forge its traffic", "addr", c.Addr())
	}
	c.log.Info("membership started", "addr", c.Addr(), "cluster", r.ClusterName, "profile", r.Profile)
	return c, nil
}

func (c *Cluster) memberlistConfig(adv netip.AddrPort) (*memberlist.Config, error) {
	var mlc *memberlist.Config
	switch c.cfg.Profile {
	case ProfileLocal:
		mlc = memberlist.DefaultLocalConfig()
	case ProfileWAN:
		mlc = memberlist.DefaultWANConfig()
	default:
		mlc = memberlist.DefaultLANConfig()
	}
	mlc.Name = c.name
	mlc.Label = c.cfg.ClusterName
	mlc.Transport = c.trans
	mlc.BindAddr = c.cfg.bind.Addr().String()
	mlc.BindPort = c.trans.port
	mlc.AdvertiseAddr = adv.Addr().String()
	mlc.AdvertisePort = int(adv.Port())
	d := &delegate{c: c}
	mlc.Delegate = d
	mlc.Events = d
	mlc.Merge = d
	mlc.Conflict = d
	// A restarted node usually comes back with a new port; let it reclaim
	// its name as soon as its old incarnation is known to be dead.
	mlc.DeadNodeReclaimTime = time.Nanosecond
	mlc.RetransmitMult = max(mlc.RetransmitMult, minRetransmitMult)
	mlc.Logger = log.New(&logBridge{log: c.log}, "", 0)
	mlc.Keyring = c.keyring
	return mlc, nil
}

// Secure reports whether the node runs with cluster keys: then gossip,
// state exchange and the transport are authenticated and encrypted. It
// is false only for a node started with Config.Insecure.
func (c *Cluster) Secure() bool { return len(c.cfg.SecretKeys) > 0 }

// Name returns the local node's name.
func (c *Cluster) Name() string { return c.name }

// Addr returns the local node's advertised "ip:port".
func (c *Cluster) Addr() string { return c.addr }

// ClusterName returns the name of the cluster this node belongs to.
func (c *Cluster) ClusterName() string { return c.cfg.ClusterName }

// State returns the lifecycle state.
func (c *Cluster) State() ClusterState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mu.state
}

// Members returns the live members, the local node included, sorted by
// name. It reads a local copy and never touches the network.
func (c *Cluster) Members() []Member {
	c.mu.RLock()
	out := make([]Member, 0, len(c.mu.members))
	for _, m := range c.mu.members {
		out = append(out, m)
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Suspects returns the names of the live members that failure detection
// suspects now: they missed their probes and will be declared failed
// unless they refute it within the suspicion timeout. A node cut off from
// most of the cluster suspects most of it before it declares anyone
// failed; layers that must not act on the minority side of a partition
// (internal/quorum) count suspects as lost. It reads memberlist's local
// view and never touches the network.
//
// With memberlist v0.7.0 it finds none: Members returns each node's
// embedded Node, whose State memberlist never updates (it keeps the
// state in its own record), and it exposes suspicion nowhere else. So
// the layers that count suspects as lost count them as live until they
// are declared failed (RELIABILITY.md, "What is still wrong").
//
// The answer may be up to suspectsTTL old: replication asks on every
// write, and memberlist answers by copying its whole member list under
// the lock its gossip takes, while a suspicion lasts seconds.
func (c *Cluster) Suspects() []string {
	if v := c.suspects.Load(); v != nil && time.Since(v.at) < suspectsTTL {
		return slices.Clone(v.names)
	}
	var names []string
	for _, n := range c.ml.Members() {
		if n.State == memberlist.StateSuspect && n.Name != c.name {
			names = append(names, n.Name)
		}
	}
	c.suspects.Store(&suspectView{at: time.Now(), names: names})
	return slices.Clone(names)
}

// suspectsTTL is how long Suspects reuses an answer: far below the
// shortest suspicion memberlist allows (SuspicionMult probe intervals).
const suspectsTTL = 50 * time.Millisecond

// suspectView is an answer of Suspects and when memberlist gave it;
// never modified once stored.
type suspectView struct {
	at    time.Time
	names []string
}

// LastFailure returns when this node last saw a member fail (zero if
// never). It is set before subscribers are told of the failure, so a
// layer that reacts to what another subscriber did on a failure (naming
// dropping the failed node's bindings, say) finds it already set: pins
// wait a lease from it before claiming.
func (c *Cluster) LastFailure() time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mu.lastFailure
}

// Member returns the live member with the given name.
func (c *Cluster) Member(name string) (Member, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.mu.members[name]
	return m, ok
}

// NumMembers returns how many members are alive, the local node included.
func (c *Cluster) NumMembers() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.mu.members)
}

// LocalMember returns the local node as the cluster sees it.
func (c *Cluster) LocalMember() Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if m, ok := c.mu.members[c.name]; ok {
		return m
	}
	return Member{Name: c.name, Addr: c.addr, TransportAddr: c.callAddr, State: StateAlive, Meta: c.mu.meta}
}

// Subscribe returns a subscription to member events. Its first events are
// joins for the members alive now, so that a subscriber never misses a
// member; every later change follows in order.
func (c *Cluster) Subscribe() *Subscription {
	c.mu.Lock()
	initial := make([]Event, 0, len(c.mu.members))
	for _, m := range c.mu.members {
		initial = append(initial, Event{Type: EventJoin, Member: m})
	}
	slices.SortFunc(initial, func(a, b Event) int { return cmp.Compare(a.Member.Name, b.Member.Name) })
	s := newSubscription(initial)
	if c.mu.state >= ClusterLeft {
		c.mu.Unlock()
		s.closeNow()
		return s
	}
	c.mu.subs[s] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		s.run()
		c.mu.Lock()
		delete(c.mu.subs, s)
		c.mu.Unlock()
	}()
	return s
}

// UpdateMeta changes the local node's metadata and gossips it; members see
// an EventUpdate. fn receives a copy of the current metadata to modify.
func (c *Cluster) UpdateMeta(ctx context.Context, fn func(*Meta)) error {
	c.mu.Lock()
	if c.mu.state >= ClusterLeft {
		c.mu.Unlock()
		return ErrShutdown
	}
	m := c.mu.meta
	m.Tags = cloneTags(m.Tags)
	fn(&m)
	if m.Weight <= 0 || m.Weight > maxWeight {
		c.mu.Unlock()
		return fmt.Errorf("%w: Weight %d is outside 1..%d", ErrInvalidConfig, m.Weight, maxWeight)
	}
	b, err := encodeMeta(m, c.callAddr)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.mu.meta = m
	c.meta.Store(&b)
	c.mu.Unlock()
	return c.ml.UpdateNode(timeoutOf(ctx, 5*time.Second))
}

// Join contacts the given "host:port" addresses and merges their
// clusters into ours. Discovery does this by itself; Join is for callers
// that learn addresses some other way. It returns how many answered.
func (c *Cluster) Join(ctx context.Context, addrs ...string) (int, error) {
	if c.isShutdown() {
		return 0, ErrShutdown
	}
	return c.disc.join(ctx, addrs)
}

// Leave tells the other members that this node is leaving, waits (bounded
// by ctx) until the news has been sent, and then stops like Shutdown.
// Others see EventLeave rather than EventFail.
func (c *Cluster) Leave(ctx context.Context) error {
	c.mu.Lock()
	if c.mu.state != ClusterRunning {
		c.mu.Unlock()
		return ErrShutdown
	}
	c.mu.state = ClusterLeaving
	c.mu.Unlock()

	c.announceLeave(ctx)
	err := c.ml.Leave(timeoutOf(ctx, 5*time.Second))
	if err != nil && c.ml.NumMembers() <= 1 {
		// Nobody is left to relay the broadcast: the others left (or
		// are leaving) too, as when a whole cluster is stopped at once.
		// They heard the notice that announceLeave sent them directly.
		err = nil
	}
	c.stop(ClusterLeft)
	if err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// announceLeave tells every live member, directly and before memberlist's
// own leave message, that this node is leaving, and waits (bounded by ctx
// and leaveAckTimeout) until each has acknowledged. memberlist reports a
// leave and a crash through the same callback without saying which, and
// its leave message is gossiped a few times at most, so in a small cluster
// some members would never hear it and would later declare the node
// failed. The acknowledgement matters: without it memberlist's UDP leave
// message can overtake our TCP announcement.
func (c *Cluster) announceLeave(ctx context.Context) {
	msg, err := encodeMsg(kindLeave, leaveWire{N: c.name})
	if err != nil {
		c.log.Error("encode leave announcement", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, leaveAckTimeout)
	defer cancel()
	var peers []*memberlist.Node
	for _, m := range c.Members() {
		if n := sendTarget(m); m.Name != c.name && n != nil {
			peers = append(peers, n)
		}
	}
	// An ack, or "" for a peer the announcement could not reach: room
	// for both per peer, so that neither sender ever blocks.
	acks := make(chan string, 2*len(peers))
	c.leaveAcks.Store(&acks)
	defer c.leaveAcks.Store(nil)

	var wg sync.WaitGroup
	sem := make(chan struct{}, 16) // bounds the TCP connections opened at once
	for _, n := range peers {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.ml.SendReliable(n, msg); err != nil {
				c.log.Debug("leave announcement not delivered", "member", n.Name, "err", err)
				acks <- "" // nobody to wait for
			}
		}()
	}
	waiting := len(peers)
	for waiting > 0 {
		select {
		case <-acks:
			waiting--
		case <-ctx.Done():
			c.log.Debug("leaving without every acknowledgement", "missing", waiting)
			waiting = 0
		}
	}
	wg.Wait()
}

// leaveAckTimeout bounds how long Leave waits for members to acknowledge
// the announcement; a member that does not answer in time will report a
// failure instead of a leave, which is all that is lost.
const leaveAckTimeout = 3 * time.Second

// ackLeave answers a member's leave announcement. It runs on its own
// goroutine because memberlist's message callbacks must not block.
func (c *Cluster) ackLeave(name string) {
	c.mu.Lock()
	if _, ok := c.mu.members[name]; !ok || c.mu.state != ClusterRunning {
		c.mu.Unlock()
		return
	}
	c.mu.leaving[name] = true
	c.wg.Add(1)
	c.mu.Unlock()
	c.log.Debug("member announced its leave", "member", name)
	go func() {
		defer c.wg.Done()
		msg, err := encodeMsg(kindLeaveAck, leaveWire{N: c.name})
		if err != nil {
			return
		}
		if n := c.memberlistNode(name); n != nil {
			if err := c.ml.SendReliable(n, msg); err != nil {
				c.log.Debug("leave acknowledgement not delivered", "member", name, "err", err)
			}
		}
	}()
}

// leaveAcked receives an acknowledgement while Leave waits for them.
func (c *Cluster) leaveAcked(name string) {
	if p := c.leaveAcks.Load(); p != nil {
		select {
		case *p <- name:
		default: // more acks than peers: a duplicate, ignore it
		}
	}
}

// Shutdown stops the node at once, without telling anyone: the others
// will detect it as failed. It waits for every goroutine of the Cluster,
// closes all subscriptions, and is safe to call more than once.
func (c *Cluster) Shutdown() {
	c.stop(ClusterShutdown)
}

func (c *Cluster) stop(final ClusterState) {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.mu.state = final
		subs := make([]*Subscription, 0, len(c.mu.subs))
		for s := range c.mu.subs {
			subs = append(subs, s)
		}
		c.mu.Unlock()

		c.cancel()
		if c.disc != nil {
			c.disc.stop()
		}
		if err := c.ml.Shutdown(); err != nil {
			c.log.Warn("memberlist shutdown", "err", err)
		}
		if err := c.calls.Shutdown(); err != nil {
			c.log.Warn("transport shutdown", "err", err)
		}
		for _, s := range subs {
			s.Close()
		}
		c.wg.Wait()
		c.log.Info("membership stopped", "state", final)
	})
}

func (c *Cluster) isShutdown() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mu.state >= ClusterLeft
}

// memberlistNode returns a node to send to for a live member. It is a
// fresh value built from our own member list: the *Node that memberlist
// hands out is its internal state, which it rewrites under its own lock
// while SendReliable would be reading it.
func (c *Cluster) memberlistNode(name string) *memberlist.Node {
	m, ok := c.Member(name)
	if !ok {
		return nil
	}
	return sendTarget(m)
}

func sendTarget(m Member) *memberlist.Node {
	ap, err := netip.ParseAddrPort(m.Addr)
	if err != nil {
		return nil
	}
	return &memberlist.Node{Name: m.Name, Addr: net.IP(ap.Addr().AsSlice()), Port: ap.Port()}
}

// apply records a member change and fans the event out. It runs inside
// memberlist's event callbacks, so it only touches our own state and the
// subscribers' queues, which never block.
// A departure (gone == true) is a leave if the member announced one, and a
// failure otherwise.
func (c *Cluster) apply(t EventType, n *memberlist.Node) {
	m := c.toMember(n)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.state >= ClusterLeft {
		return
	}
	switch t {
	case EventJoin:
		c.mu.members[m.Name] = m
		delete(c.mu.lost, m.Name)
		delete(c.mu.leaving, m.Name)
	case EventUpdate:
		c.mu.members[m.Name] = m
	case EventLeave:
		_, known := c.mu.members[m.Name]
		delete(c.mu.members, m.Name)
		if !known {
			return
		}
		if c.mu.leaving[m.Name] {
			delete(c.mu.leaving, m.Name)
			delete(c.mu.lost, m.Name)
			m.State = StateLeft
		} else {
			t, m.State = EventFail, StateFailed
			c.mu.lastFailure = time.Now()
			if len(c.mu.lost) < maxLost {
				c.mu.lost[m.Name] = lostMember{addr: m.Addr, at: time.Now()}
			}
		}
	}
	c.log.Debug("member event", "type", t, "member", m.Name)
	for s := range c.mu.subs {
		s.push(Event{Type: t, Member: m})
	}
}

func (c *Cluster) toMember(n *memberlist.Node) Member {
	meta, taddr, err := decodeMeta(n.Meta)
	if err != nil {
		c.stats.badMeta.Add(1)
		c.log.Warn("member has unreadable metadata", "member", n.Name, "err", err)
	}
	return Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), TransportAddr: taddr, State: StateAlive, Meta: meta}
}

func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return def
}
