package membership

import (
	"context"
	"errors"
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

// initialJoin tries the well-known members once so that New can report a
// name clash, and so that a node whose peers are up is joined when New
// returns. Nobody answering is not an error: they may start later.
func (d *discovery) initialJoin(ctx context.Context) error {
	if len(d.c.cfg.WellKnown) == 0 {
		return nil
	}
	targets := d.targets(ctx)
	if len(targets) == 0 {
		return nil
	}
	_, err := d.join(ctx, targets)
	if p := d.c.conflict.Load(); p != nil {
		return *p
	}
	if err != nil && !errors.Is(err, ErrNoPeers) {
		return err
	}
	return nil
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
