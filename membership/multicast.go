package membership

import (
	"net/netip"

	"github.com/troupe-go/troupe/internal/multicast"
)

// MulticastStats counts multicast announcements sent, heard, and dropped
// by reason.
type MulticastStats = multicast.Stats

// startMulticast announces this node on the group and joins the members
// of its cluster that it hears. Joining runs on the discoverer's delivery
// goroutine, which is never the one reading datagrams, so a slow join
// never stops the node from hearing the group.
func startMulticast(c *Cluster) (multicaster, error) {
	m := c.cfg.Multicast
	local := ""
	if ip := c.cfg.bind.Addr(); ip.Is4() && !ip.IsUnspecified() {
		local = ip.String()
	} else if adv := c.cfg.advertise.Addr(); adv.Is4() && adv != (netip.Addr{}) {
		local = adv.String()
	}
	return multicast.Start(c.ctx, multicast.Config{
		Group:        m.Group,
		Port:         m.Port,
		Interface:    m.Interface,
		TTL:          m.TTL,
		Interval:     m.Interval,
		SlowInterval: m.SlowInterval,
		ClusterName:  c.cfg.ClusterName,
		NodeName:     c.name,
		Advertise:    func() string { return c.addr },
		Keys:         c.Keys,
		Joined:       func() bool { return c.NumMembers() > 1 },
		Known: func(node string) bool {
			_, ok := c.Member(node)
			return ok
		},
		OnPeer: func(node, addr string) {
			c.log.Debug("heard a peer on the multicast group", "peer", node, "addr", addr)
			_, _ = c.disc.join(c.ctx, []string{addr})
		},
		Faults:    c.cfg.Faults,
		LocalHost: local,
		Logger:    c.log.With("component", "multicast"),
	})
}
