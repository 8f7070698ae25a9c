package membership

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// discovery finds peers and keeps finding them. memberlist alone never
// re-contacts a node it has declared dead, so after a partition heals the
// two halves would stay apart forever (memberlist issue #222). discovery
// therefore keeps trying, with backoff, the well-known members that are
// not in the member list and the last-known addresses of members that
// failed recently; multicast announcements, when enabled, add whoever is
// heard on the group.
type discovery struct {
	c      *Cluster
	timing discoveryTiming
	kick   chan struct{}
	done   chan struct{}
	mcast  multicaster

	warned sync.Map // well-known address -> struct{}: loopback warning given
}

// multicaster is the part of multicast discovery that the rest of the
// Cluster sees; nil when multicast is off.
type multicaster interface {
	Stats() MulticastStats
	AnnounceNow()
	Close() error
}

func newDiscovery(c *Cluster) *discovery {
	return &discovery{c: c, timing: c.cfg.Profile.discovery(), kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// initialJoin joins a well-known member before New returns, retrying
// with backoff for up to JoinTimeout, so that a node that cannot reach its
// cluster (it is down, or this node has another ClusterName or key) fails
// instead of running alone as a cluster of one. A node that is itself a
// well-known member tries once: it may be the first. So does one with a
// negative JoinTimeout, which keeps trying in the background.
func (d *discovery) initialJoin(ctx context.Context) error {
	c := d.c
	if len(c.cfg.WellKnown) == 0 {
		return nil
	}
	self, wait := d.isWellKnown(ctx), c.cfg.JoinTimeout
	deadline := time.Now().Add(wait)
	backoff := d.timing.joinBackoffMin
	var last error
	for {
		targets := d.targets(ctx)
		if len(targets) > 0 {
			n, err := d.join(ctx, targets)
			if p := c.conflict.Load(); p != nil {
				return *p
			}
			if n > 0 {
				return nil
			}
			if err != nil && !errors.Is(err, ErrNoPeers) {
				return err
			}
			last = err
		}
		if self || wait < 0 {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		t := time.NewTimer(min(jitter(backoff), left))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: no well-known member accepted this node before the start was cancelled: %w", ErrNoPeers, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(backoff*2, d.timing.joinBackoffMax)
	}
	if last == nil {
		last = errors.New("no well-known member address resolved")
	}
	return fmt.Errorf("%w: none of the well-known members %v accepted this node within %v; check that they run and that this node's ClusterName and SecretKeys are theirs (a wrong key or cluster name looks like silence): %w",
		ErrNoPeers, c.cfg.WellKnown, wait, last)
}

// isWellKnown reports whether this node's advertised address is among
// the well-known members'.
func (d *discovery) isWellKnown(ctx context.Context) bool {
	for _, a := range d.resolveWellKnown(ctx) {
		if a == d.c.addr {
			return true
		}
	}
	return false
}

func (d *discovery) start() error {
	c := d.c
	if c.cfg.Multicast != nil {
		m, err := startMulticast(c)
		if err != nil {
			return err
		}
		d.mcast = m
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(d.done)
		d.loop()
	}()
	return nil
}

func (d *discovery) stop() {
	if d.mcast != nil {
		if err := d.mcast.Close(); err != nil {
			d.c.log.Warn("stop multicast discovery", "err", err)
		}
	}
}

func (d *discovery) multicastStats() MulticastStats {
	if d == nil || d.mcast == nil {
		return MulticastStats{}
	}
	return d.mcast.Stats()
}

// loop retries missing peers: quickly with exponential backoff while the
// node is alone, then every rejoinInterval.
func (d *discovery) loop() {
	c := d.c
	backoff := d.timing.joinBackoffMin
	for {
		wait := d.timing.rejoinInterval
		if c.NumMembers() <= 1 {
			wait = backoff
			backoff = min(backoff*2, d.timing.joinBackoffMax)
		} else {
			backoff = d.timing.joinBackoffMin
		}
		t := time.NewTimer(jitter(wait))
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-d.kick:
			t.Stop()
		case <-t.C:
		}
		targets := d.targets(c.ctx)
		if len(targets) == 0 {
			continue
		}
		if n, _ := d.join(c.ctx, targets); n > 0 {
			backoff = d.timing.joinBackoffMin
		}
	}
}

// jitter spreads retries over [d/2, d) so that a whole cluster restarted
// at once does not retry in lockstep.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// join contacts each address in turn (so that Shutdown can interrupt it
// between addresses) and returns how many answered.
func (d *discovery) join(ctx context.Context, addrs []string) (int, error) {
	c := d.c
	joined := 0
	var last error
	for _, a := range addrs {
		if ctx.Err() != nil || c.ctx.Err() != nil {
			break
		}
		c.stats.joinAttempts.Add(1)
		n, err := c.ml.Join([]string{a})
		if err != nil {
			last = err
			c.log.Debug("join attempt failed", "addr", a, "err", err)
		}
		joined += n
	}
	if joined == 0 {
		c.stats.joinFailures.Add(1)
		if p := c.conflict.Load(); p != nil {
			return 0, *p
		}
		if last != nil {
			return 0, errors.Join(ErrNoPeers, last)
		}
		return 0, ErrNoPeers
	}
	return joined, nil
}

// targets lists the addresses worth contacting now: well-known members
// and recently failed members that are not alive in our list.
func (d *discovery) targets(ctx context.Context) []string {
	c := d.c
	c.mu.RLock()
	alive := make(map[string]bool, len(c.mu.members))
	for _, m := range c.mu.members {
		alive[m.Addr] = true
	}
	var lost []string
	for _, l := range c.mu.lost {
		if time.Since(l.at) < d.timing.lostWindow {
			lost = append(lost, l.addr)
		}
	}
	c.mu.RUnlock()
	alive[c.addr] = true

	seen := map[string]bool{}
	var out []string
	add := func(a string) {
		if !alive[a] && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range d.resolveWellKnown(ctx) {
		add(a)
	}
	for _, a := range lost {
		add(a)
	}
	return out
}

// resolveWellKnown expands every well-known "host:port" into "ip:port"
// addresses. A host that does not resolve is logged and skipped; it may
// resolve on the next round.
func (d *discovery) resolveWellKnown(ctx context.Context) []string {
	c := d.c
	var out []string
	for _, wk := range c.cfg.WellKnown {
		host, port, err := splitHostPortDefault(wk, DefaultPort)
		if err != nil {
			continue // Validate refused these already
		}
		ips := []string{host}
		if _, err := netip.ParseAddr(host); err != nil {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ips, err = c.cfg.Resolver.LookupHost(rctx, host)
			cancel()
			if err != nil {
				c.log.Warn("cannot resolve well-known member", "host", host, "err", err)
				continue
			}
		}
		for _, ip := range ips {
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				continue
			}
			a := net.JoinHostPort(addr.Unmap().String(), strconv.Itoa(port))
			if c.cfg.advertise.Addr().IsLoopback() && !addr.IsLoopback() {
				if _, dup := d.warned.LoadOrStore(a, struct{}{}); !dup {
					c.log.Warn("this node advertises a loopback address but a well-known member is elsewhere: it cannot reach us; set AdvertiseAddr", "advertise", c.addr, "wellKnown", a)
				}
			}
			out = append(out, a)
		}
	}
	return out
}
