package naming

import "github.com/troupe-go/troupe/membership"

// Member events: how the core follows membership. A member that leaves or
// fails takes its node-scoped bindings with it on every node; one that
// returns is asked for its records and digest at once rather than at the
// next push/pull, since after a healed partition the copies differ most.

func (c *core) memberEvent(ev membership.Event) {
	m := ev.Member
	c.log.Debug("member event", "type", ev.Type, "member", m.Name)
	c.membersDirty = true
	if m.Name == c.self {
		c.live[m.Name] = m
		return
	}
	switch ev.Type {
	case membership.EventJoin, membership.EventUpdate:
		c.live[m.Name] = m
		if _, back := c.departed[m.Name]; back && ev.Type == membership.EventJoin {
			// A member returns (a healed partition, a restart): fetch its
			// bindings, and compare digests, which repairs the
			// cluster-scoped records both sides changed meanwhile.
			delete(c.departed, m.Name)
			c.requestOwner(m.Name, false)
			c.askDigest(m.Name)
		} else if o := c.owners[m.Name]; ev.Type == membership.EventJoin && o != nil && o.ver < o.max {
			c.requestOwner(m.Name, false)
		}
	case membership.EventLeave, membership.EventFail:
		delete(c.live, m.Name)
		c.departed[m.Name] = c.now()
		if o := c.owners[m.Name]; o != nil {
			c.removeOwner(o)
		}
		delete(c.fetches, m.Name)
		c.confirmMemberGone(m.Name)
	}
}
