package multicast

import (
	"container/list"
	"errors"
	"net/netip"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/troupe-go/troupe/internal/faultnet"
)

// outcome is what the receiver decided about one datagram. Each outcome
// but outReport has a counter of the same name in Stats.
type outcome int

const (
	outPartitioned outcome = iota // cut off by Faults
	outMalformed                  // oversized, bad framing, undecodable
	outForeign                    // another cluster's announcement
	outForged                     // bad or missing tag, or a tag we cannot check
	outSelf                       // our own announcement, looped back
	outStale                      // timestamp outside ±MaxSkew
	outReplayed                   // timestamp not newer than the last one of that node
	outKnown                      // valid, from a node that is already a member
	outThrottled                  // valid, but that node was reported less than Interval ago
	outReport                     // valid and new: for OnPeer
)

var outcomeNames = [...]string{
	outPartitioned: "partitioned",
	outMalformed:   "malformed",
	outForeign:     "foreign",
	outForged:      "forged",
	outSelf:        "self",
	outStale:       "stale",
	outReplayed:    "replayed",
	outKnown:       "known",
	outThrottled:   "throttled",
	outReport:      "report",
}

func (o outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// receiver decides what to do with each datagram. It is the whole receive
// policy with no goroutines or sockets, so that it can be tested by
// feeding it bytes and times. It is owned by one goroutine.
type receiver struct {
	cluster, node string
	localHost     string
	maxSkew       time.Duration
	rateLimit     time.Duration // shortest time between two reports of one node
	keys          func() [][]byte
	known         func(string) bool
	faults        faultnet.Hook // nil: no faults
	h             *codec.MsgpackHandle
	senders       *senderTable
}

func newReceiver(cfg Config) *receiver {
	return &receiver{
		cluster:   cfg.ClusterName,
		node:      cfg.NodeName,
		localHost: cfg.LocalHost,
		maxSkew:   cfg.MaxSkew,
		rateLimit: cfg.Interval,
		keys:      cfg.Keys,
		known:     cfg.Known,
		faults:    cfg.Faults,
		h:         newHandle(),
		senders:   newSenderTable(MaxSenders),
	}
}

// handle decides about datagram b from source address from, received at
// now. The checks run from the cheapest and least trusting to the ones
// that change state: only an announcement that is authentic and fresh
// enters the sender table. It returns the announcement for outReport and
// an error that explains a drop, for logging.
func (r *receiver) handle(b []byte, from netip.Addr, now time.Time) (outcome, announcement, error) {
	if r.faults != nil && r.faults.Drop(from.String(), r.localHost) {
		return outPartitioned, announcement{}, nil
	}
	p, err := decodeAnnouncement(r.h, b)
	if err != nil {
		return outMalformed, announcement{}, err
	}
	a := p.ann
	// Checked before the tag, so that a cluster with other keys sharing
	// the group counts as Foreign, not as an attack.
	if a.Cluster != r.cluster {
		return outForeign, a, nil
	}
	if !verify(p, r.keys()) {
		return outForged, a, errForged(p)
	}
	if a.Node == r.node {
		return outSelf, a, nil
	}
	if t := now.UnixNano(); a.Time < t-int64(r.maxSkew) || a.Time > t+int64(r.maxSkew) {
		return outStale, a, nil
	}
	s := r.senders.lookup(a.Node)
	if s != nil && a.Time <= s.last {
		return outReplayed, a, nil
	}
	if s == nil {
		s = r.senders.add(a.Node)
	}
	s.last = a.Time
	if r.known(a.Node) {
		return outKnown, a, nil
	}
	if !s.reported.IsZero() && now.Sub(s.reported) < r.rateLimit {
		return outThrottled, a, nil
	}
	s.reported = now
	return outReport, a, nil
}

func errForged(p packet) error {
	if p.tag == nil {
		return errors.New("multicast: unsigned announcement, and this node has keys")
	}
	return errors.New("multicast: announcement signed with an unknown key (or this node has none)")
}

// senderTable remembers, per node name, the newest timestamp accepted and
// when the node was last reported, for at most max names. It evicts the
// least recently heard name, so memory is bounded whatever a flood of
// invented names does. Forgetting a name weakens replay protection for it
// only within MaxSkew, and a replay can at worst make this node join that
// real node's address again.
type senderTable struct {
	max     int
	order   *list.List // of *sender, most recently heard first
	byName  map[string]*list.Element
	evicted uint64
}

type sender struct {
	node     string
	last     int64 // newest accepted announcement time, unix nanoseconds
	reported time.Time
}

func newSenderTable(max int) *senderTable {
	return &senderTable{max: max, order: list.New(), byName: make(map[string]*list.Element)}
}

// lookup returns the node's entry, marking it recently heard, or nil.
func (t *senderTable) lookup(node string) *sender {
	e, ok := t.byName[node]
	if !ok {
		return nil
	}
	t.order.MoveToFront(e)
	return e.Value.(*sender)
}

// add inserts a new entry for node, evicting the least recently heard
// one if the table is full.
func (t *senderTable) add(node string) *sender {
	if t.order.Len() >= t.max {
		oldest := t.order.Back()
		t.order.Remove(oldest)
		delete(t.byName, oldest.Value.(*sender).node)
		t.evicted++
	}
	s := &sender{node: node}
	t.byName[node] = t.order.PushFront(s)
	return s
}

func (t *senderTable) len() int { return t.order.Len() }
