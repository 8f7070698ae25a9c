package membership

import "github.com/troupe-go/troupe/internal/multicast"

// MulticastStats counts the multicast announcements a node sent, and what
// it did with each datagram it heard on the group. Every counter only
// grows, except Senders. All are zero when Config.Multicast is nil.
//
// Every datagram heard ends in exactly one of Partitioned, Malformed,
// Foreign, Forged, Self, Stale, Replayed or Accepted; every accepted one
// in Known, Throttled or Reported, or is still waiting to be joined. A
// rising Forged, Malformed or Replayed count means someone on the network
// sends what no node of this cluster sends; a rising Stale count, clocks
// that disagree by more than MulticastMaxSkew.
type MulticastStats struct {
	Sent       uint64 // announcements sent
	SendErrors uint64 // announcements that could not be encoded or sent

	Received    uint64 // datagrams read from the group
	Partitioned uint64 // dropped: the source is cut off by Config.Faults
	Malformed   uint64 // dropped: oversized, bad framing or undecodable, or a version this node does not speak
	Foreign     uint64 // dropped: another cluster's announcement
	Forged      uint64 // dropped: bad tag; no tag while this node has keys; a tag while it has none
	Self        uint64 // dropped: this node's own announcement, looped back
	Stale       uint64 // dropped: timestamp more than MulticastMaxSkew from this node's clock
	Replayed    uint64 // dropped: timestamp not newer than the last one heard from that node
	Accepted    uint64 // authentic, fresh announcements of other nodes of this cluster

	Known     uint64 // accepted, from a node that is an alive member already: not joined
	Throttled uint64 // accepted, not joined: same node joined within MulticastConfig.Interval, or too many waiting
	Reported  uint64 // accepted announcements whose node this node tried to join

	Senders int // node names remembered now for replay protection; bounded
}

// discoverer adapts the multicast discoverer to multicaster. Its Stats
// converts the internal counters to MulticastStats, which has the same
// fields, so that a counter added there does not compile until it is
// added here too.
type discoverer struct{ *multicast.Discoverer }

var _ multicaster = discoverer{}

func (d discoverer) Stats() MulticastStats { return MulticastStats(d.Discoverer.Stats()) }

// startMulticast announces this node on the group and joins the members
// of its cluster that it hears. Joining runs on the discoverer's delivery
// goroutine, which is never the one reading datagrams, so a slow join
// never stops the node from hearing the group.
func startMulticast(c *Cluster) (multicaster, error) {
	d, err := multicast.Start(c.ctx, c.cfg.multicastConfig(c.cfg.Multicast, c))
	if err != nil {
		return nil, err
	}
	return discoverer{d}, nil
}

// multicastConfig maps the public MulticastConfig onto the discoverer's.
// It copies the user's fields as they are: the discoverer applies the
// defaults to its zero fields and validates them. With c nil it has
// placeholder callbacks, for validation only.
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
