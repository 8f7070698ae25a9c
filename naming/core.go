package naming

import (
	"log/slog"
	"time"

	iradix "github.com/hashicorp/go-immutable-radix/v2"

	"github.com/troupe-go/troupe/membership"
)

// core is the tree's state machine. Only the Tree's loop goroutine
// touches it; it does no I/O: it reads decoded messages, membership events
// and local operations, and leaves what must be sent in out, the watch
// events in events, and the new read view in root. Tests drive it
// directly, without goroutines or a network.
//
// Data model. Every node keeps, per owner (a node, at one incarnation of
// its tree), the owner's node-scoped records, each with the owner's
// version of its last change; and the cluster-scoped records (with
// tombstones), last-writer-wins by HLC. The visible binding of a name is a
// pure function of the records for it (see build), so nodes that hold the
// same records show the same tree.
//
// Its methods are split by concern: hash.go and records.go (the records
// and their hashes), view.go (the visible tree), localops.go (Bind,
// Rebind, Unbind), peers.go (messages and anti-entropy), members.go
// (member events) and timers.go (tick).
type core struct {
	self         string
	inc          uint64 // this tree's incarnation: its start time in ns
	opts         Options
	clock        hlc
	now          func() time.Time
	stats        *counters
	log          *slog.Logger
	maxBroadcast int

	owners  map[string]*owner
	names   map[string]*nameIdx
	cbucket [numBuckets]map[string]*crec
	bhash   [numBuckets]uint64
	chash   uint64 // XOR of bhash
	ncrecs  int
	nrecs   int // node-scoped and cluster-scoped records, tombstones included
	nbytes  int64
	// usage is what each member is charged for: its node-scoped records
	// and the cluster-scoped ones it wrote last (MaxMemberBindings).
	usage map[string]usage

	live     map[string]membership.Member // live members, self included
	departed map[string]time.Time         // members that left or failed, and when
	retired  map[string]uint64            // owner -> highest incarnation that closed

	fetches  map[string]*fetch    // owner -> fetch under way
	confirms map[uint64]*confirm  // request -> confirmed Bind under way
	answers  []reply              // replies to local operations that waited (confirmations)
	asked    map[string]time.Time // peer -> last digest request / cluster fetch
	nextReq  uint64
	lastGC   time.Time

	dirty      map[string]struct{}
	dirtyOrder []string
	txn        *iradix.Txn[*entry]
	root       *iradix.Tree[*entry]

	events        []Event
	changed       []indexChange // entries changed since the Tree last published its index
	out           []outMsg
	digestDirty   bool
	membersDirty  bool
	beaconDue     time.Time
	beaconFirst   time.Time
	beaconAgainAt time.Time
}

// rec is one node-scoped record: owner's offer for name.
type rec struct {
	name  string
	owner string
	ver   uint64
	born  uint64
	ts    uint64
	flags uint8
	value []byte
}

// crec is one cluster-scoped record or tombstone.
type crec struct {
	name    string
	writer  string
	creator string // with born, identifies the lineage: one Bind and its Rebinds
	born    uint64
	ts      uint64
	deleted bool
	value   []byte
}

// nameIdx gathers every record for one name and the entry published for
// it.
type nameIdx struct {
	name string
	recs []*rec
	c    *crec
	cur  *entry
}

// owner is one node's node-scoped records at one incarnation.
type owner struct {
	name  string
	inc   uint64
	ver   uint64 // every change up to ver is applied (or superseded)
	max   uint64 // highest version applied
	hash  uint64 // XOR of recHash over recs: equal hashes, equal records
	recs  map[string]*rec
	tombs map[string]uint64 // recently deleted names -> version of the deletion
	tombQ []tomb
	floor uint64 // highest version of a deletion forgotten from tombs
}

type tomb struct {
	name string
	ver  uint64
}

// maxTombs bounds the deletions an owner remembers. A peer more than
// this many deletions behind receives a full snapshot instead of a delta.
const maxTombs = 4096

type fetch struct {
	req      uint64
	deadline time.Time
	full     bool
	nextSeq  int
	v        uint64
	seen     map[string]struct{}
}

// outMsg is a message to send: a broadcast when to is "", else a direct
// message; raw is encoded, or owner/clust is a possibly large answer that
// the sender splits into chunks.
type outMsg struct {
	to    string
	key   string
	raw   []byte
	owner *ownerDataMsg
	clust *clustDataMsg
}

func newCore(self string, inc uint64, opts Options, now func() time.Time, stats *counters, maxBroadcast int) *core {
	c := &core{
		self: self, inc: inc, opts: opts, now: now, stats: stats, log: opts.Logger,
		clock:        hlc{now: now},
		maxBroadcast: maxBroadcast,
		owners:       map[string]*owner{},
		names:        map[string]*nameIdx{},
		usage:        map[string]usage{},
		live:         map[string]membership.Member{},
		departed:     map[string]time.Time{},
		retired:      map[string]uint64{},
		fetches:      map[string]*fetch{},
		confirms:     map[uint64]*confirm{},
		asked:        map[string]time.Time{},
		dirty:        map[string]struct{}{},
		root:         iradix.New[*entry](),
		digestDirty:  true,
		membersDirty: true,
	}
	for i := range c.cbucket {
		c.cbucket[i] = map[string]*crec{}
	}
	c.owners[self] = newOwner(self, inc)
	return c
}

func newOwner(name string, inc uint64) *owner {
	return &owner{name: name, inc: inc, recs: map[string]*rec{}, tombs: map[string]uint64{}}
}
