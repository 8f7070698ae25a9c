package multicast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"golang.org/x/net/ipv4"
)

// Discoverer announces this node on a multicast group and reports the
// nodes of its cluster that it hears. Start one with Start; stop it with
// Close. Its methods are safe for concurrent use.
type Discoverer struct {
	cfg   Config
	log   *slog.Logger
	group *net.UDPAddr

	recv *net.UDPConn // bound to group:port, joined to the group
	send *net.UDPConn // bound to LocalHost:0, sends to group:port
	rx   *receiver    // owned by the receive goroutine

	kick  chan struct{} // AnnounceNow; capacity 1 coalesces requests
	peers chan peer     // receive -> OnPeer goroutine, capacity queueLen

	stats counters

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeConn sync.Once
	closeOnce sync.Once

	// lastWarn is when each drop reason was last logged at warning level;
	// owned by the receive goroutine.
	lastWarn [outReport]time.Time
}

// warnEvery is the shortest time between two warnings for one drop
// reason: a flood of bad datagrams must not become a flood of log lines.
const warnEvery = time.Minute

type peer struct{ node, addr string }

// Stats counts what a Discoverer sent and what it did with each datagram
// it received. Every counter only grows, except Senders.
//
// Every received datagram ends in exactly one of Partitioned, Malformed,
// Foreign, Forged, Self, Stale, Replayed or Accepted; every accepted one
// in Known, Throttled, or (once OnPeer returned) Reported, or is still
// queued. A rising Forged, Malformed or Replayed count means someone on
// the network sends what no node of this cluster sends; a rising Stale
// count, clocks that disagree by more than MaxSkew.
//
// membership.MulticastStats has the same fields, in the same order, and
// is converted from Stats: a field added here must be added there.
type Stats struct {
	Sent       uint64 // announcements sent
	SendErrors uint64 // announcements that could not be encoded or sent

	Received    uint64 // datagrams read from the group
	Partitioned uint64 // dropped: the source is cut off by Config.Faults
	Malformed   uint64 // dropped: oversized, bad framing or undecodable, or a version this node does not speak
	Foreign     uint64 // dropped: another cluster's announcement
	Forged      uint64 // dropped: bad tag; no tag while this node has keys; a tag while it has none
	Self        uint64 // dropped: this node's own announcement, looped back
	Stale       uint64 // dropped: timestamp more than MaxSkew from this node's clock
	Replayed    uint64 // dropped: timestamp not newer than the last one heard from that node
	Accepted    uint64 // authentic, fresh announcements of other nodes of this cluster

	Known     uint64 // accepted, from an alive member: not reported
	Throttled uint64 // accepted, not reported: same node reported within Interval, or OnPeer's queue full
	Reported  uint64 // OnPeer calls that returned

	Senders int // node names in the replay table now, at most MaxSenders
}

type counters struct {
	sent, sendErrors, received, accepted, reported atomic.Uint64
	drops                                          [outReport]atomic.Uint64 // by outcome
	senders                                        atomic.Int64
}

// Start validates cfg, opens the sockets and starts announcing. The
// Discoverer stops when ctx is canceled or Close is called; call Close in
// both cases, to wait for it and release the sockets. Errors wrap
// ErrInvalidConfig or the socket error.
func Start(ctx context.Context, cfg Config) (*Discoverer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	d := &Discoverer{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "multicast", "node", cfg.NodeName),
		group: &net.UDPAddr{IP: net.ParseIP(cfg.Group), Port: cfg.Port},
		rx:    newReceiver(cfg),
		kick:  make(chan struct{}, 1),
		peers: make(chan peer, queueLen),
	}
	if err := d.open(ctx); err != nil {
		return nil, err
	}
	ctx, d.cancel = context.WithCancel(ctx)
	d.wg.Add(3)
	go d.announceLoop(ctx)
	go d.receiveLoop(ctx)
	go d.deliverLoop(ctx)
	d.log.Debug("multicast discovery started", "group", d.group.String(), "interface", cfg.Interface, "ttl", cfg.TTL)
	return d, nil
}

// open creates both sockets. The receiving one shares group:port with
// every other Discoverer on the host (SO_REUSEADDR, SO_REUSEPORT): the
// kernel gives each of them a copy of every multicast datagram. It is
// bound to the group address, not 0.0.0.0, so that it gets only this
// group's datagrams and no unicast sent to the port.
func (d *Discoverer) open(ctx context.Context) (err error) {
	var ifi *net.Interface
	if d.cfg.Interface != "" {
		if ifi, err = net.InterfaceByName(d.cfg.Interface); err != nil {
			return fmt.Errorf("multicast: interface %q: %w", d.cfg.Interface, err)
		}
	}

	lc := net.ListenConfig{Control: shareAddr}
	rc, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort(listenHost(d.cfg.Group), strconv.Itoa(d.cfg.Port)))
	if err != nil {
		return fmt.Errorf("multicast: listening on %s: %w", d.group, err)
	}
	d.recv = rc.(*net.UDPConn)
	defer func() {
		if err != nil {
			_ = d.recv.Close()
		}
	}()
	// Room for a burst of announcements (a cluster starting at once, or a
	// flood) while the receive loop catches up. Best effort: the kernel
	// caps it at net.core.rmem_max.
	_ = d.recv.SetReadBuffer(recvBuffer)
	// The kernel picks the interface by route when ifi is nil.
	if err := ipv4.NewPacketConn(d.recv).JoinGroup(ifi, d.group); err != nil {
		return fmt.Errorf("multicast: joining %s: %w", d.group, err)
	}

	sc, err := net.ListenPacket("udp4", net.JoinHostPort(d.cfg.LocalHost, "0"))
	if err != nil {
		return fmt.Errorf("multicast: sending socket on %q: %w", d.cfg.LocalHost, err)
	}
	d.send = sc.(*net.UDPConn)
	defer func() {
		if err != nil {
			_ = d.send.Close()
		}
	}()
	p := ipv4.NewPacketConn(d.send)
	if err := p.SetMulticastTTL(d.cfg.TTL); err != nil {
		return fmt.Errorf("multicast: setting TTL %d: %w", d.cfg.TTL, err)
	}
	// Loopback on: other nodes of the cluster may run on this host, and
	// in tests all of them do. Our own copy is recognized and dropped.
	if err := p.SetMulticastLoopback(true); err != nil {
		return fmt.Errorf("multicast: enabling loopback: %w", err)
	}
	if ifi != nil {
		if err := p.SetMulticastInterface(ifi); err != nil {
			return fmt.Errorf("multicast: sending on %q: %w", d.cfg.Interface, err)
		}
	}
	return nil
}

// AnnounceNow asks for an announcement sooner than the period would send
// it, for example after a member failed. Requests coalesce, and two
// announcements are never closer than Interval. It never blocks.
func (d *Discoverer) AnnounceNow() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the counters.
func (d *Discoverer) Stats() Stats {
	c := &d.stats
	drop := func(o outcome) uint64 { return c.drops[o].Load() }
	return Stats{
		Sent:        c.sent.Load(),
		SendErrors:  c.sendErrors.Load(),
		Received:    c.received.Load(),
		Partitioned: drop(outPartitioned),
		Malformed:   drop(outMalformed),
		Foreign:     drop(outForeign),
		Forged:      drop(outForged),
		Self:        drop(outSelf),
		Stale:       drop(outStale),
		Replayed:    drop(outReplayed),
		Accepted:    c.accepted.Load(),
		Known:       drop(outKnown),
		Throttled:   drop(outThrottled),
		Reported:    c.reported.Load(),
		Senders:     int(c.senders.Load()),
	}
}

// Close stops announcing and listening and waits for the Discoverer's
// goroutines, including a running OnPeer call, to return. Calling it
// again returns nil. It must not be called from OnPeer.
func (d *Discoverer) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.cancel()
		err = d.closeSockets()
		d.wg.Wait()
		d.log.Debug("multicast discovery stopped")
	})
	return err
}

// closeSockets unblocks the receive loop. It runs once, from Close or
// from the announce loop when ctx is canceled.
func (d *Discoverer) closeSockets() error {
	var err error
	d.closeConn.Do(func() {
		err = errors.Join(d.recv.Close(), d.send.Close())
	})
	return err
}

// announceLoop sends an announcement at once, then every Interval while
// not joined and every SlowInterval once joined, each period jittered.
// When ctx ends it closes the sockets, which ends the receive loop.
func (d *Discoverer) announceLoop(ctx context.Context) {
	defer d.wg.Done()
	h := newHandle()
	var lastTime int64 // newest timestamp sent; they must grow even if the clock steps back
	var last time.Time // when the last announcement went out
	var lastWarn time.Time
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = d.closeSockets()
			return
		case <-d.kick:
			// Bring the next announcement forward, but no closer than
			// Interval to the last one, so that callers cannot turn the
			// node into a flood.
			if earliest := last.Add(d.cfg.Interval); earliest.Before(next) {
				next = earliest
				timer.Reset(time.Until(next))
			}
			continue
		case <-timer.C:
		}

		now := time.Now()
		lastTime = max(now.UnixNano(), lastTime+1)
		if err := d.announce(h, lastTime); err != nil {
			d.stats.sendErrors.Add(1)
			// A bad address or a network that is down fails every
			// period: say so once per warnEvery, not four times a second.
			level := slog.LevelDebug
			if now.Sub(lastWarn) >= warnEvery && !errors.Is(err, net.ErrClosed) {
				lastWarn, level = now, slog.LevelWarn
			}
			d.log.Log(ctx, level, "not announcing", "err", err, "total", d.stats.sendErrors.Load())
		} else {
			d.stats.sent.Add(1)
		}
		last = now
		next = now.Add(jitter(d.period()))
		timer.Reset(time.Until(next))
	}
}

func (d *Discoverer) period() time.Duration {
	if d.cfg.Joined() {
		return d.cfg.SlowInterval
	}
	return d.cfg.Interval
}

// jitter spreads p over ±10%.
func jitter(p time.Duration) time.Duration {
	if spread := p / 5; spread > 0 {
		return p - p/10 + rand.N(spread)
	}
	return p
}

// announce sends one announcement with timestamp ts.
func (d *Discoverer) announce(h *codec.MsgpackHandle, ts int64) error {
	a := announcement{
		Cluster: d.cfg.ClusterName,
		Node:    d.cfg.NodeName,
		Addr:    d.cfg.Advertise(),
		Time:    ts,
		Nonce:   rand.Uint64(),
	}
	// Checked here as receivers will: an announcement they would drop as
	// Malformed is a configuration error to report on this node.
	if err := a.check(); err != nil {
		return fmt.Errorf("advertised address: %w", err)
	}
	b, err := encodeAnnouncement(h, a, primaryKey(d.cfg.Keys()))
	if err != nil {
		return err
	}
	if _, err := d.send.WriteTo(b, d.group); err != nil {
		return fmt.Errorf("sending to %s: %w", d.group, err)
	}
	return nil
}

// receiveLoop reads datagrams until the socket is closed, hands each to
// the receiver and queues the ones to report without ever blocking.
func (d *Discoverer) receiveLoop(ctx context.Context) {
	defer d.wg.Done()
	// One byte more than the limit: a datagram that fills the buffer was
	// truncated by the kernel, so it was too long.
	buf := make([]byte, MaxDatagram+1)
	for {
		n, src, err := d.recv.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("reading from multicast group", "err", err)
			// Do not spin on an error that repeats.
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		d.stats.received.Add(1)
		d.receive(buf[:n], src.Addr().Unmap(), time.Now())
	}
}

func (d *Discoverer) receive(b []byte, from netip.Addr, now time.Time) {
	o, a, err := d.rx.handle(b, from, now)
	d.stats.senders.Store(int64(d.rx.senders.len()))
	switch o {
	case outSelf:
		d.stats.drops[o].Add(1)
		return
	case outKnown, outThrottled, outReport:
		d.stats.accepted.Add(1)
	}
	if o != outReport {
		d.stats.drops[o].Add(1)
		d.logDrop(o, a, from, err, now)
		return
	}
	select {
	case d.peers <- peer{node: a.Node, addr: a.Addr}:
	default:
		d.stats.drops[outThrottled].Add(1)
		d.log.Debug("announcement dropped", "reason", "queue full", "node", a.Node)
	}
}

// logDrop logs a dropped announcement at debug level, and at warning level
// at most once per warnEvery for the reasons that point at a problem:
// an attacker, a misconfigured node or clocks that disagree.
func (d *Discoverer) logDrop(o outcome, a announcement, from netip.Addr, err error, now time.Time) {
	level := slog.LevelDebug
	switch o {
	case outMalformed, outForged, outStale, outReplayed:
		if now.Sub(d.lastWarn[o]) >= warnEvery {
			d.lastWarn[o] = now
			level = slog.LevelWarn
		}
	}
	if !d.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"reason", o.String(), "from", from.String()}
	if a.Node != "" {
		attrs = append(attrs, "peer", a.Node, "cluster", a.Cluster)
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if level == slog.LevelWarn {
		attrs = append(attrs, "total", d.stats.drops[o].Load(), "next_warning_after", warnEvery)
	}
	d.log.Log(context.Background(), level, "announcement dropped", attrs...)
}

// deliverLoop calls OnPeer, off the receive loop, so that a slow OnPeer
// (a memberlist join takes a round trip or a timeout) never stops the
// reading of datagrams.
func (d *Discoverer) deliverLoop(ctx context.Context) {
	defer d.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-d.peers:
			d.log.Debug("peer announced", "peer", p.node, "addr", p.addr)
			d.cfg.OnPeer(p.node, p.addr)
			d.stats.reported.Add(1)
		}
	}
}
