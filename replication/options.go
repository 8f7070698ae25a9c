package replication

import (
	"cmp"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// Mode says when Save returns.
type Mode int

const (
	// ModeSync (the default) returns from Save once the secondary has
	// applied the change: no acknowledged write is lost when one node
	// fails.
	ModeSync Mode = iota
	// ModeAsync returns from Save once the change is applied on the
	// primary and queued for the secondary. A crash of the primary loses
	// what was still queued; Save blocks while the queue is full.
	ModeAsync
)

func (m Mode) String() string {
	switch m {
	case ModeSync:
		return "sync"
	case ModeAsync:
		return "async"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Defaults applied to zero Options fields.
const (
	DefaultIdleTimeout    = 30 * time.Minute
	DefaultMaxSessionSize = 1 << 20
	DefaultAsyncQueue     = 1024
	DefaultLeaseTerm      = time.Second
	DefaultCallTimeout    = 5 * time.Second
	DefaultQuorumWindow   = time.Minute
	DefaultMaxSessions    = 100_000
)

// Limits enforced by Validate.
const (
	minTimeout     = 10 * time.Millisecond
	minSessionSize = 1 << 10
	maxSessionSize = 256 << 20
	frameOverhead  = 64 << 10 // room for keys, route and message fields around a full copy
)

// TagKey is the member tag that marks a node holding sessions; its value
// is the incarnation of the node's Sessions, which tells a restarted
// store from the one before. A member without it (a load balancer, a
// client) is never chosen as a secondary.
const TagKey = "troupe.sessions"

// Options configure Sessions. The zero value is usable: every zero field
// takes the default written beside it. NewSessions works on a copy.
//
// Sessions talk to their peers over the cluster's transport (see
// membership.Config: TransportAddr, TLS, SecretKeys, MaxMessageSize and
// Faults configure it), so Options hold no address and no security
// settings.
type Options struct {
	// Mode is ModeSync (default) or ModeAsync.
	Mode Mode

	// AsyncQueue bounds, in ModeAsync, how many changes may wait for one
	// secondary node. Save blocks (within its context) while the queue
	// is full. Default 1024.
	AsyncQueue int

	// IdleTimeout removes a session that was neither read nor saved for
	// this long, on its primary and on its secondary alike. A secondary
	// keeps its copy up to one janitor tick (IdleTimeout/8, at most 5 s)
	// longer, so that it never drops a session its primary still holds.
	// Default 30 min.
	IdleTimeout time.Duration

	// MaxSessionSize bounds a session's attributes: the sum of the
	// lengths of keys and values, in bytes. Set, SetValue and Save refuse
	// to go beyond it with ErrTooLarge. Default 1 MiB, at most 256 MiB.
	// A full copy of the session travels in one message: the cluster's
	// membership.Config.MaxMessageSize must be at least MinMessageSize
	// (MaxSessionSize plus 64 KiB; the defaults fit).
	MaxSessionSize int

	// LeaseTerm is how long a primary may serve a session after its
	// secondary last answered it, without asking again. A secondary does
	// not take over a primary's sessions until the last lease it granted
	// has run out, so a paused or cut-off primary stops serving before
	// anyone else starts. It must be well below the cluster's failure
	// detection time; after a quiet spell longer than LeaseTerm the first
	// Get costs one round trip to the secondary. Default 1 s.
	LeaseTerm time.Duration

	// QuorumWindow guards against the minority side of a partition
	// taking sessions over or acknowledging writes. A node promotes or
	// re-homes the sessions of a failed peer, and acknowledges a Save in
	// ModeSync, only while it sees a strict majority of the session nodes
	// that were alive within the last QuorumWindow (itself included), or
	// exactly half of them including the one whose name sorts first (the
	// tie-breaker of an even split: see internal/quorum). A node cut off
	// from most of the cluster keeps its sessions as they were, and
	// serves none whose secondary it cannot reach, until the cut heals.
	// If half or more of the nodes crash at once, the survivors wait this
	// long before taking their sessions over. In a two-node cluster the
	// node whose name sorts first goes on alone when the other is lost;
	// the other waits for it (or for QuorumWindow). Default 1 min.
	QuorumWindow time.Duration

	// PrimaryOnlyWrites lets a Save in ModeSync succeed when the session
	// has no secondary and no node takes a copy (every other node is
	// down): the change then lives on this node only until one comes
	// back. By default such a Save fails with ErrUnavailable, so that an
	// acknowledged Save always survives the loss of one node. A node that
	// has seen no other session node within QuorumWindow (a cluster of
	// one) acknowledges its Saves either way.
	PrimaryOnlyWrites bool

	// CallTimeout bounds each request to a peer that runs in the
	// background (failover copies, touches, drops), and requests made
	// for a caller whose context has no deadline. Default 5 s.
	CallTimeout time.Duration

	// Logger receives summaries (a failover moved n sessions) at Info,
	// problems with peers at Warn, and events of single sessions at Debug.
	// No record carries a session key or id: a session appears as a short
	// hash of its key. Default: discard.
	Logger *slog.Logger

	// MaxSessions bounds the sessions this node serves as primary: Create
	// refuses a new one beyond it with an error that wraps
	// ErrTooManySessions and ErrUnavailable, and the middleware answers
	// such a request with HTTPOptions.Error (by default 503 with
	// Retry-After). Sessions taken over from other nodes (Get, failover)
	// are never refused, so a node may serve more after a failover;
	// secondary copies are bounded by the other nodes' MaxSessions. A
	// session costs about 350 bytes on its primary and as much on its
	// secondary (BenchmarkHeldSessions, TestMiddlewareMaxSessions), plus
	// its attributes: 100,000 sessions of 1 KiB take about 130 MiB on
	// their primary. Default 100,000 (DefaultMaxSessions); negative means
	// no bound.
	MaxSessions int

	// Insecure lets Sessions run over a cluster whose members have no
	// cluster keys (membership.Config.Insecure): session state then
	// travels in plaintext, and anyone who can reach the node's transport
	// can read, forge or drop sessions. NewSessions refuses such a cluster
	// unless Insecure is set, and then logs one Warn. For tests and demos
	// on one host only.
	Insecure bool
}

// Validate reports the first problem with o, after applying defaults. It
// does not modify o.
func (o Options) Validate() error {
	o = o.withDefaults()
	switch o.Mode {
	case ModeSync, ModeAsync:
	default:
		return fmt.Errorf("%w: unknown Mode %d", ErrInvalidOptions, o.Mode)
	}
	if o.AsyncQueue < 1 {
		return fmt.Errorf("%w: AsyncQueue %d must be at least 1", ErrInvalidOptions, o.AsyncQueue)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"IdleTimeout", o.IdleTimeout}, {"LeaseTerm", o.LeaseTerm}, {"CallTimeout", o.CallTimeout}, {"QuorumWindow", o.QuorumWindow}} {
		if d.v < minTimeout {
			return fmt.Errorf("%w: %s %v is below %v", ErrInvalidOptions, d.name, d.v, minTimeout)
		}
	}
	if o.MaxSessionSize < minSessionSize || o.MaxSessionSize > maxSessionSize {
		return fmt.Errorf("%w: MaxSessionSize %d is outside [%d, %d]", ErrInvalidOptions, o.MaxSessionSize, minSessionSize, maxSessionSize)
	}
	return nil
}

// MinMessageSize is the smallest membership.Config.MaxMessageSize with
// which the cluster's transport carries a full copy of a session of
// MaxSessionSize (default applied): MaxSessionSize plus 64 KiB for the
// message around it.
func (o Options) MinMessageSize() int {
	return o.withDefaults().MaxSessionSize + frameOverhead
}

func (o Options) withDefaults() Options {
	o.AsyncQueue = cmp.Or(o.AsyncQueue, DefaultAsyncQueue)
	o.IdleTimeout = cmp.Or(o.IdleTimeout, DefaultIdleTimeout)
	o.MaxSessionSize = cmp.Or(o.MaxSessionSize, DefaultMaxSessionSize)
	o.LeaseTerm = cmp.Or(o.LeaseTerm, DefaultLeaseTerm)
	o.CallTimeout = cmp.Or(o.CallTimeout, DefaultCallTimeout)
	o.QuorumWindow = cmp.Or(o.QuorumWindow, DefaultQuorumWindow)
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	o.MaxSessions = cmp.Or(o.MaxSessions, DefaultMaxSessions)
	return o
}

// tick is the janitor's period: expiry, touches and repairs.
func (o Options) tick() time.Duration {
	return min(max(o.IdleTimeout/8, minTimeout), 5*time.Second)
}
