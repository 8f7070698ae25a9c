package naming

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Options configures a Tree. The zero value of every field means the
// default written beside it; New copies the Options and never writes to
// the caller's value.
type Options struct {
	// Channel is the membership channel the tree gossips on. Every node
	// of one tree must use the same name; two trees on one cluster need
	// two names. Default "naming".
	Channel string

	// MaxValueSize bounds one bound value, in bytes. Default 64 KiB; at
	// most 1 MiB. A value larger than a gossip packet (about 1 KB) is
	// announced by gossip and fetched from its owner over TCP, so large
	// values cost a round trip more to spread.
	MaxValueSize int

	// MaxBindings bounds how many records (one per offer, cluster-scoped
	// tombstones included) the local copy of the tree holds. Default
	// 1,000,000. Local Binds past it fail with ErrTooLarge; records
	// arriving from peers past it are dropped and counted in
	// Stats.Rejected, and the copy stays incomplete until space frees.
	MaxBindings int

	// MaxTreeBytes bounds the names and values of all records together.
	// Default 256 MiB. Enforced like MaxBindings.
	MaxTreeBytes int64

	// MaxMemberBindings bounds the records charged to one member: its
	// node-scoped offers and the cluster-scoped records (tombstones
	// included) it wrote last. Default MaxBindings/4 (at least 1), so that
	// one member cannot fill the tree for the others; at most MaxBindings.
	// This node's own Binds past it fail with ErrQuota; a peer's records
	// past it are dropped and counted in Stats.OverQuota. A write that does
	// not grow the tree (an Unbind, a Rebind with a value no larger) is
	// never refused. Every node should use the same value.
	MaxMemberBindings int

	// MaxMemberBytes bounds the names and values of the records charged to
	// one member. Default MaxTreeBytes/4; at most MaxTreeBytes. Enforced
	// like MaxMemberBindings.
	MaxMemberBytes int64

	// TombstoneTTL is how long a deleted cluster-scoped binding is
	// remembered, so that an older copy arriving late does not bring it
	// back. Default 10 min. A node that was partitioned away for longer
	// than this and still holds an older copy of the binding can
	// resurrect it when it returns; choose a TTL longer than any
	// partition you expect to heal.
	TombstoneTTL time.Duration

	// WatchBuffer is how many events one Watcher may have waiting before
	// it is dropped with ErrSlowWatcher. Default 65,536.
	WatchBuffer int

	// FetchTimeout bounds one anti-entropy fetch (request and every chunk
	// of its answer); a fetch that takes longer is retried at the next
	// opportunity. Default 10 s.
	FetchTimeout time.Duration

	// Logger receives the tree's logs (debug: fetches, member events,
	// dropped messages). Default: discard.
	Logger *slog.Logger
}

// Defaults and hard limits of Options.
const (
	DefaultChannel      = "naming"
	DefaultMaxValueSize = 64 << 10
	MaxMaxValueSize     = 1 << 20
	DefaultMaxBindings  = 1_000_000
	DefaultMaxTreeBytes = 256 << 20
	// DefaultMemberShare is the share of MaxBindings and MaxTreeBytes that
	// MaxMemberBindings and MaxMemberBytes default to: 1/DefaultMemberShare.
	DefaultMemberShare  = 4
	DefaultTombstoneTTL = 10 * time.Minute
	DefaultWatchBuffer  = 1 << 16
	DefaultFetchTimeout = 10 * time.Second
)

// Validate reports every problem with o at once, each wrapping
// ErrInvalidOptions. It does not modify o.
func (o Options) Validate() error {
	_, err := o.withDefaults()
	return err
}

func (o Options) withDefaults() (Options, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	if len(o.Channel) > 64 {
		bad("Channel %q is longer than 64 bytes", o.Channel)
	}
	if o.MaxValueSize == 0 {
		o.MaxValueSize = DefaultMaxValueSize
	}
	if o.MaxValueSize < 0 || o.MaxValueSize > MaxMaxValueSize {
		bad("MaxValueSize %d is outside 1..%d", o.MaxValueSize, MaxMaxValueSize)
	}
	if o.MaxBindings == 0 {
		o.MaxBindings = DefaultMaxBindings
	}
	if o.MaxBindings < 0 {
		bad("MaxBindings %d is negative", o.MaxBindings)
	}
	if o.MaxTreeBytes == 0 {
		o.MaxTreeBytes = DefaultMaxTreeBytes
	}
	if o.MaxTreeBytes < 0 {
		bad("MaxTreeBytes %d is negative", o.MaxTreeBytes)
	}
	if o.MaxMemberBindings == 0 {
		o.MaxMemberBindings = max(1, o.MaxBindings/DefaultMemberShare)
	}
	if o.MaxMemberBindings < 0 || o.MaxMemberBindings > max(o.MaxBindings, 1) {
		bad("MaxMemberBindings %d is outside 1..MaxBindings (%d)", o.MaxMemberBindings, o.MaxBindings)
	}
	if o.MaxMemberBytes == 0 {
		o.MaxMemberBytes = max(1, o.MaxTreeBytes/DefaultMemberShare)
	}
	if o.MaxMemberBytes < 0 || o.MaxMemberBytes > max(o.MaxTreeBytes, 1) {
		bad("MaxMemberBytes %d is outside 1..MaxTreeBytes (%d)", o.MaxMemberBytes, o.MaxTreeBytes)
	}
	if o.TombstoneTTL == 0 {
		o.TombstoneTTL = DefaultTombstoneTTL
	}
	if o.TombstoneTTL < time.Second {
		bad("TombstoneTTL %s is under 1s", o.TombstoneTTL)
	}
	if o.WatchBuffer == 0 {
		o.WatchBuffer = DefaultWatchBuffer
	}
	if o.WatchBuffer < 0 {
		bad("WatchBuffer %d is negative", o.WatchBuffer)
	}
	if o.FetchTimeout == 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.FetchTimeout < 100*time.Millisecond {
		bad("FetchTimeout %s is under 100ms", o.FetchTimeout)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(errs) > 0 {
		return Options{}, errors.Join(errs...)
	}
	return o, nil
}

// Scope says who owns a binding.
type Scope int

const (
	// NodeScope bindings (the default) belong to the node that bound
	// them and vanish everywhere when that node leaves or fails.
	NodeScope Scope = iota
	// ClusterScope bindings belong to the cluster: they survive any node;
	// concurrent writes are resolved by last-writer-wins on a hybrid
	// logical clock.
	ClusterScope
)

func (s Scope) String() string {
	switch s {
	case NodeScope:
		return "node"
	case ClusterScope:
		return "cluster"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// BindOption modifies one Bind or Rebind.
type BindOption func(*bindOptions)

type bindOptions struct {
	scope       Scope
	clusterable bool
	confirmed   bool
}

// Clusterable lets several nodes bind the same name, each binding being
// one offer; lookups see every live offer. Every node binding the name
// must pass it. Node scope only.
func Clusterable() BindOption { return func(o *bindOptions) { o.clusterable = true } }

// Confirmed makes Bind (or Rebind) return only once every live member has
// applied the binding and agrees that it holds. Without it, two nodes
// that bind one name at the same moment both return nil and the loser
// learns of it later, by an EventConflict; with it, the loser's Bind
// returns ErrNameBound naming the winner, and the winner's returns nil,
// by which time every member that was live when it started (and did not
// fail meanwhile) shows the winner. It costs one direct message to every
// member and its answer. Node scope, not Clusterable. Given to Unbind,
// it makes Unbind wait until every live member has removed the binding.
func Confirmed() BindOption { return func(o *bindOptions) { o.confirmed = true } }

// WithScope sets the binding's scope (default NodeScope).
func WithScope(s Scope) BindOption { return func(o *bindOptions) { o.scope = s } }

func bindOpts(opts []BindOption) (bindOptions, error) {
	var o bindOptions
	for _, f := range opts {
		f(&o)
	}
	if o.scope != NodeScope && o.scope != ClusterScope {
		return o, fmt.Errorf("%w: unknown scope %d", ErrInvalidOptions, int(o.scope))
	}
	if o.scope == ClusterScope && o.clusterable {
		return o, fmt.Errorf("%w: a cluster-scoped binding has one value; Clusterable needs node scope", ErrInvalidOptions)
	}
	if o.confirmed && (o.scope == ClusterScope || o.clusterable) {
		return o, fmt.Errorf("%w: Confirmed is for node-scoped names that are not clusterable", ErrInvalidOptions)
	}
	return o, nil
}
