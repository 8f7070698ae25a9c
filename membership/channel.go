package membership

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/troupe-go/troupe/internal/wire"
)

// Handler receives what peers send on a channel. It is called from the
// network goroutines: memberlist's for broadcasts and state, the one that
// reads the sender's transport connection for direct messages. So every
// method must return quickly and never block: hand work to a goroutine of
// your own rather than doing I/O here.
type Handler interface {
	// HandleMessage receives a broadcast or a direct message. from is the
	// sending node's name (for a relayed broadcast: the node that first
	// sent it). msg is the handler's to keep.
	HandleMessage(from string, msg []byte)
	// LocalState returns this channel's share of the periodic state
	// exchange with one random peer (anti-entropy); join is true when the
	// exchange is part of a join. Keep it small (a digest, not the data):
	// it travels on every exchange.
	LocalState(join bool) []byte
	// MergeRemoteState receives a peer's LocalState.
	MergeRemoteState(from string, state []byte, join bool)
}

// HandlerFuncs adapts plain functions to Handler; nil fields do nothing.
type HandlerFuncs struct {
	Message func(from string, msg []byte)
	State   func(join bool) []byte
	Merge   func(from string, state []byte, join bool)
}

var _ Handler = HandlerFuncs{}

// HandleMessage implements Handler.
func (h HandlerFuncs) HandleMessage(from string, msg []byte) {
	if h.Message != nil {
		h.Message(from, msg)
	}
}

// LocalState implements Handler.
func (h HandlerFuncs) LocalState(join bool) []byte {
	if h.State != nil {
		return h.State(join)
	}
	return nil
}

// MergeRemoteState implements Handler.
func (h HandlerFuncs) MergeRemoteState(from string, state []byte, join bool) {
	if h.Merge != nil {
		h.Merge(from, state, join)
	}
}

// Message kinds inside memberlist user messages. Append only: the values
// are on the wire.
const (
	kindBroadcast byte = 1 // gossiped to all, relayed once by every receiver
	_             byte = 2 // retired (direct messages ride the transport, calls.go); never reuse
	kindLeave     byte = 3 // "I am leaving", sent directly to every member
	kindLeaveAck  byte = 4 // the answer to kindLeave
)

// stateVersion prefixes the push/pull share. Bump it only with a decoder
// that still reads the old one.
const stateVersion byte = 1

type broadcastWire struct {
	C string `codec:"c"` // channel
	O string `codec:"o"` // origin node
	I uint64 `codec:"i"` // random id: the dedup key for relaying
	B []byte `codec:"b"`
}

type leaveWire struct {
	N string `codec:"n"`
}

type stateWire struct {
	F string            `codec:"f"`
	S map[string][]byte `codec:"s"`
}

const (
	// maxPacket is what one gossip packet may carry for us after
	// memberlist's compound header, label and encryption overhead within
	// its 1400-byte UDP buffer.
	maxPacket = 1200
	// maxState bounds our whole push/pull share, well below memberlist's
	// 20 MiB receive limit (past which the sender only sees a reset).
	maxState = 16 << 20
)

// Channel is a named lane on the cluster's gossip, state exchange and
// direct messages. Upper layers (naming, replication) each register one.
type Channel struct {
	name    string
	cluster *Cluster
	handler Handler
	errs    []error // WithErrors: a handler error's code is its index + 1

	methods struct { // wire method names, see wireMethod
		sync.RWMutex
		m map[string]string
	}
}

// Channel registers a named channel. Its handler starts receiving at once.
// Every node that wants a channel's messages registers it under the same
// name; messages for a channel a node does not have are dropped and
// counted.
func (c *Cluster) Channel(name string, h Handler, opts ...ChannelOption) (*Channel, error) {
	if name == "" || len(name) > 64 || strings.Contains(name, "/") {
		return nil, fmt.Errorf("%w: channel name must be 1-64 bytes without a slash", ErrInvalidConfig)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.state >= ClusterLeft {
		return nil, ErrShutdown
	}
	if _, ok := c.mu.channels[name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrChannelExists, name)
	}
	ch := &Channel{name: name, cluster: c, handler: h}
	ch.methods.m = map[string]string{}
	for _, o := range opts {
		o(ch)
	}
	c.mu.channels[name] = ch
	return ch, nil
}

// channel returns the registered channel of that name, or nil.
func (c *Cluster) channel(name string) *Channel {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mu.channels[name]
}

// Close unregisters the channel; its handler is not called afterwards
// (except by calls already under way).
func (ch *Channel) Close() {
	c := ch.cluster
	c.mu.Lock()
	if c.mu.channels[ch.name] == ch {
		delete(c.mu.channels, ch.name)
	}
	c.mu.Unlock()
}

// MaxBroadcast is the largest message Broadcast accepts.
func (ch *Channel) MaxBroadcast() int {
	return maxPacket - broadcastOverhead(ch.name, ch.cluster.name)
}

func broadcastOverhead(channel, origin string) int {
	// kind byte + msgpack map header and keys + two str headers + uint64 +
	// bin header: 32 bytes is a safe upper bound for the fixed part.
	return 32 + len(channel) + len(origin)
}

// Broadcast gossips msg to every live member, the sender included only in
// the sense that it is not delivered back to it. Every receiver relays it
// once, so it reaches the whole cluster in O(log N) gossip rounds; it is
// still best effort (a node partitioned away misses it), so pair
// broadcasts with state exchange to repair what gossip loses.
func (ch *Channel) Broadcast(msg []byte) error {
	return ch.broadcast("", msg)
}

// BroadcastKeyed is Broadcast where a newer message with the same key
// replaces an older one still queued on this node, so that a value that
// changes quickly is not gossiped in every version.
func (ch *Channel) BroadcastKeyed(key string, msg []byte) error {
	return ch.broadcast(ch.name+"\x00"+key, msg)
}

func (ch *Channel) broadcast(key string, msg []byte) error {
	c := ch.cluster
	if len(msg) > ch.MaxBroadcast() {
		return fmt.Errorf("%w: %d bytes, a broadcast carries at most %d", ErrMessageTooLarge, len(msg), ch.MaxBroadcast())
	}
	id := rand.Uint64()
	raw, err := encodeMsg(kindBroadcast, broadcastWire{C: ch.name, O: c.name, I: id, B: msg})
	if err != nil {
		return err
	}
	if c.isShutdown() {
		return ErrShutdown
	}
	c.dedup.seen(id) // our own message must not be relayed back to us
	c.enqueue(&broadcast{key: key, msg: raw})
	return nil
}

func encodeMsg(kind byte, v any) ([]byte, error) {
	body, err := wire.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{kind}, body...), nil
}

// maxQueuedBroadcasts bounds the gossip queue. A node with no peers never
// transmits, so without a bound its queue would grow with every broadcast;
// past the bound the oldest messages are dropped (and counted): gossip is
// best effort, and anti-entropy repairs what it loses.
const maxQueuedBroadcasts = 4096

func (c *Cluster) enqueue(b *broadcast) {
	c.queue.QueueBroadcast(b)
	if n := c.queue.NumQueued(); n > maxQueuedBroadcasts {
		c.queue.Prune(maxQueuedBroadcasts)
		c.stats.queueDropped.Add(uint64(n - maxQueuedBroadcasts))
	}
}

// broadcast is one queued gossip message. Keyed broadcasts invalidate
// older ones with the same key; relayed and unkeyed ones are unique.
type broadcast struct {
	key string
	msg []byte
}

var (
	_ memberlist.Broadcast      = (*broadcast)(nil)
	_ memberlist.NamedBroadcast = (*broadcast)(nil)
)

func (b *broadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*broadcast)
	return ok && b.key != "" && o.key == b.key
}
func (b *broadcast) Name() string    { return b.key }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// dedup remembers recently seen broadcast ids so that each node relays a
// broadcast once. It is a fixed-size ring: memory stays bounded however
// many messages pass, and an id forgotten after 64Ki newer ones can no
// longer be circulating.
type dedup struct {
	mu   sync.Mutex
	set  map[uint64]struct{}
	ring []uint64
	next int
}

const dedupSize = 1 << 16

func newDedup() *dedup {
	return &dedup{set: make(map[uint64]struct{}, dedupSize), ring: make([]uint64, dedupSize)}
}

// seen records id and reports whether it was already known.
func (d *dedup) seen(id uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.set[id]; ok {
		return true
	}
	if len(d.set) >= dedupSize {
		delete(d.set, d.ring[d.next])
	}
	d.ring[d.next] = id
	d.next = (d.next + 1) % dedupSize
	d.set[id] = struct{}{}
	return false
}
