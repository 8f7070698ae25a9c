package membership

import "sync/atomic"

// Stats counts what the node dropped or repaired. Every counter only
// grows. A rising Malformed or NameConflicts deserves a look at the
// network; Duplicates and Relayed are normal gossip work.
type Stats struct {
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
	Multicast      MulticastStats
}

type counters struct {
	malformed, unknownChannel, duplicates, relayed, badMeta,
	stateTooLarge, nameConflicts, joinAttempts, joinFailures, queueDropped atomic.Uint64
}

// Stats returns a snapshot of the node's counters.
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
	}
	s.Multicast = c.disc.multicastStats()
	return s
}
