package membership

import (
	"errors"
	"sync/atomic"

	"github.com/troupe-go/troupe/internal/transport"
)

// Stats is a snapshot of the node's view of its members and of its
// counters. The member counts are now; every counter only grows. A rising
// Malformed or NameConflicts deserves a look at the network; Duplicates
// and Relayed are normal gossip work.
//
// The traffic counters count Troupe's own messages, not memberlist's
// probes and membership gossip. Gossip*: the channel broadcasts and their
// relays, one for each copy handed to memberlist for a gossip packet or
// received from one (received ones include the rare leave notices, which
// memberlist delivers the same way). State*: the channels' shares of the
// periodic state exchange (push/pull), one for each exchange. Channel*:
// the direct messages and calls over the node's transport (Channel.Send,
// TrySend, Call, and the peers' ones served here), a call counted once it
// reached the peer; the answers' bytes count in the direction they travel.
// Bytes are message bodies, without headers or encryption.
type Stats struct {
	Alive   int // live members not suspected of failure, the local node included
	Suspect int // live members that failure detection suspects now
	Failed  int // members declared failed that have not come back (at most 1024 remembered)

	Malformed      uint64 // undecodable messages or state, dropped
	UnknownChannel uint64 // messages for a channel this node has not registered
	Duplicates     uint64 // broadcasts heard again and not relayed
	Relayed        uint64 // broadcasts relayed on first receipt
	BadMeta        uint64 // members whose metadata could not be read
	StateTooLarge  uint64 // channel shares left out of a state exchange
	NameConflicts  uint64 // nodes that tried to use a live member's name
	JoinAttempts   uint64 // discovery join attempts
	JoinFailures   uint64 // discovery join attempts that reached nobody
	QueueDropped   uint64 // oldest broadcasts dropped from a full gossip queue

	GossipSent           uint64 // messages handed to memberlist's gossip packets
	GossipBytesSent      uint64
	GossipReceived       uint64 // messages received from gossip packets
	GossipBytesReceived  uint64
	StateSent            uint64 // state exchange shares sent
	StateBytesSent       uint64
	StateReceived        uint64 // state exchange shares received
	StateBytesReceived   uint64
	ChannelSent          uint64 // direct messages and calls sent
	ChannelBytesSent     uint64 // their bodies, and the answers to the peers' calls
	ChannelReceived      uint64 // direct messages and calls received
	ChannelBytesReceived uint64 // their bodies, and the answers to this node's calls

	Multicast MulticastStats
}

type counters struct {
	malformed, unknownChannel, duplicates, relayed, badMeta,
	stateTooLarge, nameConflicts, joinAttempts, joinFailures, queueDropped atomic.Uint64

	gossipOut, gossipIn, stateOut, stateIn, channelOut, channelIn traffic
}

// traffic counts messages and their bytes in one direction.
type traffic struct{ msgs, bytes atomic.Uint64 }

// add counts one message of n bytes.
func (t *traffic) add(n int) {
	t.msgs.Add(1)
	t.bytes.Add(uint64(n))
}

// Stats returns a snapshot of the node's member counts and counters.
func (c *Cluster) Stats() Stats {
	s := Stats{
		Malformed:      c.stats.malformed.Load(),
		UnknownChannel: c.stats.unknownChannel.Load(),
		Duplicates:     c.stats.duplicates.Load(),
		Relayed:        c.stats.relayed.Load(),
		BadMeta:        c.stats.badMeta.Load(),
		StateTooLarge:  c.stats.stateTooLarge.Load(),
		NameConflicts:  c.stats.nameConflicts.Load(),
		JoinAttempts:   c.stats.joinAttempts.Load(),
		JoinFailures:   c.stats.joinFailures.Load(),
		QueueDropped:   c.stats.queueDropped.Load(),

		GossipSent:           c.stats.gossipOut.msgs.Load(),
		GossipBytesSent:      c.stats.gossipOut.bytes.Load(),
		GossipReceived:       c.stats.gossipIn.msgs.Load(),
		GossipBytesReceived:  c.stats.gossipIn.bytes.Load(),
		StateSent:            c.stats.stateOut.msgs.Load(),
		StateBytesSent:       c.stats.stateOut.bytes.Load(),
		StateReceived:        c.stats.stateIn.msgs.Load(),
		StateBytesReceived:   c.stats.stateIn.bytes.Load(),
		ChannelSent:          c.stats.channelOut.msgs.Load(),
		ChannelBytesSent:     c.stats.channelOut.bytes.Load(),
		ChannelReceived:      c.stats.channelIn.msgs.Load(),
		ChannelBytesReceived: c.stats.channelIn.bytes.Load(),
	}
	suspects := c.Suspects() // memberlist's lock, never under c.mu
	c.mu.RLock()
	s.Alive = len(c.mu.members)
	for _, name := range suspects {
		if _, ok := c.mu.members[name]; ok {
			s.Alive--
			s.Suspect++
		}
	}
	s.Failed = len(c.mu.lost)
	c.mu.RUnlock()
	s.Multicast = c.disc.multicastStats()
	return s
}

// countCall counts a Channel.Call that reached the peer: answered, or
// refused by its handler.
func (s *counters) countCall(req, resp int, err error) {
	if _, remote := errors.AsType[*transport.RemoteError](err); err != nil && !remote {
		return
	}
	s.channelOut.add(req)
	s.channelIn.bytes.Add(uint64(resp))
}
