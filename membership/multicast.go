package membership

import "github.com/troupe-go/troupe/internal/multicast"

// MulticastStats counts multicast announcements sent, heard, and dropped
// by reason.
type MulticastStats = multicast.Stats

// startMulticast announces this node on the group and joins the members
// of its cluster that it hears. Joining runs on the discoverer's delivery
// goroutine, which is never the one reading datagrams, so a slow join
// never stops the node from hearing the group.
func startMulticast(c *Cluster) (multicaster, error) {
	return multicast.Start(c.ctx, c.cfg.multicastConfig(c.cfg.Multicast, c))
}

// multicastConfig maps the public MulticastConfig onto the discoverer's.
// With c nil it has placeholder callbacks, for validation only.
func (r resolved) multicastConfig(m *MulticastConfig, c *Cluster) multicast.Config {
	cfg := multicast.Config{
		Group:        m.Group,
		Port:         m.Port,
		Interface:    m.Interface,
		TTL:          m.TTL,
		Interval:     m.Interval,
		SlowInterval: m.SlowInterval,
		ClusterName:  r.ClusterName,
		NodeName:     r.NodeName,
		Advertise:    func() string { return r.advertise.String() },
		OnPeer:       func(string, string) {},
		Faults:       r.Faults,
	}
	if ip := r.bind.Addr(); ip.Is4() && !ip.IsUnspecified() {
		cfg.LocalHost = ip.String()
	} else if adv := r.advertise.Addr(); adv.Is4() {
		cfg.LocalHost = adv.String()
	}
	if c == nil {
		return cfg
	}
	cfg.Advertise = func() string { return c.addr }
	cfg.Keys = c.Keys
	cfg.Joined = func() bool { return c.NumMembers() > 1 }
	cfg.Known = func(node string) bool {
		_, ok := c.Member(node)
		return ok
	}
	cfg.OnPeer = func(node, addr string) {
		c.log.Debug("heard a peer on the multicast group", "peer", node, "addr", addr)
		_, _ = c.disc.join(c.ctx, []string{addr})
	}
	cfg.Logger = c.log.With("component", "multicast")
	return cfg
}
