package naming

import "sync/atomic"

// Stats counts what the tree holds, dropped and repaired. Counters only
// grow. A rising Malformed, Foreign or Oversized deserves a look at the
// peers; Stale and Fetches are normal repair work; Dropped means the
// tree's inbox or send queue overflowed (anti-entropy repairs it);
// Rejected means MaxBindings or MaxTreeBytes was reached; OverQuota, that
// a member went past MaxMemberBindings or MaxMemberBytes.
type Stats struct {
	Bindings int   // names bound
	Records  int   // records held: offers, cluster-scoped bindings, tombstones
	Bytes    int64 // names and values of the records

	Malformed  uint64 // undecodable messages or state, dropped
	Foreign    uint64 // messages of another protocol version or unknown type
	Oversized  uint64 // records with a value over MaxValueSize
	Stale      uint64 // messages of an old incarnation, a departed node or an abandoned fetch
	Dropped    uint64 // messages dropped because a queue was full
	Rejected   uint64 // records refused by MaxBindings / MaxTreeBytes
	OverQuota  uint64 // records of a member past MaxMemberBindings / MaxMemberBytes, dropped
	Conflicts  uint64 // bindings of this node that lost a concurrent bind
	Broadcasts uint64 // gossip messages sent
	Fetches    uint64 // anti-entropy fetches requested
	Served     uint64 // fetches answered
	SendErrors uint64 // direct messages or broadcasts that failed
	BytesOut   uint64 // bytes of direct messages sent
	BytesIn    uint64 // bytes of digests and fetched data received
}

type counters struct {
	malformed, foreign, oversized, stale, dropped, rejected, overQuota, conflicts,
	broadcasts, fetches, served, sendErrors, bytesOut, bytesIn atomic.Uint64
}

// Stats returns a snapshot of the tree's counters.
func (t *Tree) Stats() Stats {
	c := &t.stats
	return Stats{
		Bindings:   t.Len(),
		Records:    int(t.records.Load()),
		Bytes:      t.bytes.Load(),
		Malformed:  c.malformed.Load(),
		Foreign:    c.foreign.Load(),
		Oversized:  c.oversized.Load(),
		Stale:      c.stale.Load(),
		Dropped:    c.dropped.Load(),
		Rejected:   c.rejected.Load(),
		OverQuota:  c.overQuota.Load(),
		Conflicts:  c.conflicts.Load(),
		Broadcasts: c.broadcasts.Load(),
		Fetches:    c.fetches.Load(),
		Served:     c.served.Load(),
		SendErrors: c.sendErrors.Load(),
		BytesOut:   c.bytesOut.Load(),
		BytesIn:    c.bytesIn.Load(),
	}
}
