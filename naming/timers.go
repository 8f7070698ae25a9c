package naming

import "time"

// The core's timers. Time reaches the core only through tick, which the
// loop calls on a ticker, and the now function given to newCore, so that
// tests move time by hand and a seeded run replays exactly. tick sends the
// beacons that broadcast scheduled, asks again when a fetch's deadline
// passes, and every gcInterval collects old tombstones and departed
// members; retire, the goodbye sent on Close, is here beside sendBeacon as
// the other message the core sends of its own accord.

// tick runs the timers: beacons, fetch deadlines, and every
// gcInterval the collection of old tombstones and departed members.
func (c *core) tick() {
	now := c.now()
	if !c.beaconDue.IsZero() && !now.Before(c.beaconDue) {
		c.beaconDue = time.Time{}
		c.beaconAgainAt = now.Add(beaconAgain)
		c.sendBeacon()
	} else if !c.beaconAgainAt.IsZero() && !now.Before(c.beaconAgainAt) {
		c.beaconAgainAt = time.Time{}
		c.sendBeacon()
	}
	c.confirmTick(now)
	for name, f := range c.fetches {
		if now.After(f.deadline) {
			delete(c.fetches, name)
			if _, ok := c.live[name]; ok {
				c.requestOwner(name, false) // a lost request or answer: ask again
			}
		}
	}
	if now.Sub(c.lastGC) < gcInterval {
		return
	}
	c.lastGC = now
	for b := range c.cbucket {
		for _, r := range c.cbucket[b] {
			if r.deleted && c.expired(r.ts) {
				c.dropCrec(r)
			}
		}
	}
	for name, t := range c.departed {
		if now.Sub(t) > c.opts.TombstoneTTL {
			delete(c.departed, name)
		}
	}
	for name, t := range c.asked {
		if now.Sub(t) > time.Minute {
			delete(c.asked, name)
		}
	}
}

const gcInterval = 10 * time.Second

func (c *core) sendBeacon() {
	self := c.owners[c.self]
	raw, err := encodeMsg(msgBeacon, beaconMsg{I: c.inc, V: self.max, H: self.hash, CH: c.chash})
	if err != nil {
		return
	}
	c.out = append(c.out, outMsg{key: "beacon", raw: raw})
}

// retire tells the peers that this tree is closing.
func (c *core) retire() {
	raw, err := encodeMsg(msgRetire, retireMsg{I: c.inc})
	if err == nil {
		c.out = append(c.out, outMsg{key: "retire", raw: raw})
	}
}
