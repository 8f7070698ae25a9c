package membership

import (
	"fmt"
	"net"
	"strconv"

	"github.com/hashicorp/memberlist"

	"github.com/troupe-go/troupe/internal/wire"
)

// delegate adapts the Cluster to memberlist's callbacks. memberlist calls
// these from its own goroutines, sometimes under its own locks, so each
// method only touches the Cluster's state and never calls back into
// memberlist.
type delegate struct{ c *Cluster }

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.MergeDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.c.meta.Load()
	if len(b) > limit { // cannot happen: encodeMeta enforces MetaMaxSize
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(buf []byte) {
	c := d.c
	c.stats.gossipIn.add(len(buf))
	if len(buf) == 0 {
		c.stats.malformed.Add(1)
		return
	}
	switch buf[0] {
	case kindBroadcast:
		var m broadcastWire
		if err := wire.Unmarshal(buf[1:], &m); err != nil {
			c.stats.malformed.Add(1)
			return
		}
		if c.dedup.seen(m.I) {
			c.stats.duplicates.Add(1)
			return
		}
		// memberlist does not relay user broadcasts: only the sender
		// transmits. Re-queue on first receipt so the message reaches
		// everyone, as serf does.
		c.enqueue(&broadcast{msg: append([]byte(nil), buf...)})
		c.stats.relayed.Add(1)
		c.deliver(m.C, m.O, m.B)
	case kindLeave, kindLeaveAck:
		var m leaveWire
		if err := wire.Unmarshal(buf[1:], &m); err != nil {
			c.stats.malformed.Add(1)
			return
		}
		if buf[0] == kindLeave {
			c.ackLeave(m.N)
		} else {
			c.leaveAcked(m.N)
		}
	default:
		c.stats.malformed.Add(1)
	}
}

func (c *Cluster) deliver(channel, from string, msg []byte) {
	ch := c.channel(channel)
	if ch == nil {
		c.stats.unknownChannel.Add(1)
		return
	}
	ch.handler.HandleMessage(from, msg)
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	msgs := d.c.queue.GetBroadcasts(overhead, limit)
	for _, m := range msgs {
		d.c.stats.gossipOut.add(len(m))
	}
	return msgs
}

func (d *delegate) LocalState(join bool) []byte {
	c := d.c
	c.mu.RLock()
	chans := make([]*Channel, 0, len(c.mu.channels))
	for _, ch := range c.mu.channels {
		chans = append(chans, ch)
	}
	c.mu.RUnlock()

	st := stateWire{F: c.name, S: make(map[string][]byte, len(chans))}
	total := 0
	for _, ch := range chans {
		b := ch.handler.LocalState(join)
		if total+len(b) > maxState {
			c.stats.stateTooLarge.Add(1)
			c.log.Error("channel state left out of the exchange: total over limit", "channel", ch.name, "bytes", len(b), "limit", maxState)
			continue
		}
		total += len(b)
		st.S[ch.name] = b
	}
	body, err := wire.Marshal(st)
	if err != nil {
		c.log.Error("encode local state", "err", err)
		return nil
	}
	out := append([]byte{stateVersion}, body...)
	c.stats.stateOut.add(len(out))
	return out
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := d.c
	c.stats.stateIn.add(len(buf))
	if len(buf) == 0 {
		return
	}
	var st stateWire
	if buf[0] != stateVersion || wire.Unmarshal(buf[1:], &st) != nil {
		c.stats.malformed.Add(1)
		return
	}
	for name, b := range st.S {
		c.mu.RLock()
		ch := c.mu.channels[name]
		c.mu.RUnlock()
		if ch == nil {
			c.stats.unknownChannel.Add(1)
			continue
		}
		ch.handler.MergeRemoteState(st.F, b, join)
	}
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.c.apply(EventJoin, n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.c.apply(EventUpdate, n) }

// NotifyLeave covers both a graceful leave and a failure: memberlist does
// not say which (the Node's State field is not updated), so apply decides
// from the leave announcement in the member's metadata.
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.c.apply(EventLeave, n) }

// NotifyMerge refuses to merge with a cluster in which a live member
// already has our name at another address. memberlist would otherwise
// accept the join and then log conflicts forever while two processes
// fight over one identity.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	c := d.c
	for _, p := range peers {
		if p.Name != c.name || p.State == memberlist.StateDead || p.State == memberlist.StateLeft {
			continue
		}
		addr := net.JoinHostPort(p.Addr.String(), strconv.Itoa(int(p.Port)))
		if addr == c.addr {
			continue
		}
		err := fmt.Errorf("%w: %q is already used by the member at %s (this node is %s); give every node its own NodeName", ErrNameInUse, c.name, addr, c.addr)
		c.conflict.Store(&err)
		c.log.Error("refusing to merge", "err", err)
		return err
	}
	return nil
}

func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.c.stats.nameConflicts.Add(1)
	d.c.log.Error("two nodes claim one name; the newcomer is ignored",
		"name", existing.Name, "member", existing.Address(), "newcomer", other.Address())
}
