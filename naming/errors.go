package naming

import (
	"errors"
	"fmt"
)

// Errors returned by this package. Match them with errors.Is: most calls
// wrap one of these with the details (which name, which node, which
// limit).
var (
	// ErrInvalidName is returned by every call that takes a name or a
	// prefix when it is empty (where a name is required), has an empty
	// segment ("a//b"), a "." or ".." segment, a character outside
	// [A-Za-z0-9._~:@+=,!$*-], or is too long (MaxNameLen bytes,
	// MaxSegmentLen per segment, MaxDepth segments).
	ErrInvalidName = errors.New("naming: invalid name")

	// ErrInvalidOptions is returned by Options.Validate and New for a bad
	// Options value, and by Bind and Rebind for BindOptions that do not go
	// together (ClusterScope with Clusterable).
	ErrInvalidOptions = errors.New("naming: invalid options")

	// ErrNameBound is returned by Bind when the name is already bound (by
	// this node or, for a name that is not clusterable, by another node),
	// and by Rebind when another node holds the name or it is bound with
	// another scope.
	ErrNameBound = errors.New("naming: name already bound")

	// ErrNotFound is returned by Lookup, LookupValue and Select when the
	// name is not bound, and by Unbind when this node holds no binding for
	// it. Lookup returns it unwrapped (so that a miss does not allocate).
	ErrNotFound = errors.New("naming: name not bound")

	// ErrNoOffer is returned by Select (and the RoundTripper) when the name
	// is bound but no offer is left after filtering out failed nodes and
	// what the policy's filters exclude.
	ErrNoOffer = errors.New("naming: no live offer")

	// ErrTooLarge is returned by Bind and Rebind when the value exceeds
	// Options.MaxValueSize, or when the tree would exceed
	// Options.MaxBindings or Options.MaxTreeBytes (or, as ErrQuota, this
	// node's share of them).
	ErrTooLarge = errors.New("naming: too large")

	// ErrQuota is returned by Bind and Rebind when the records charged to
	// this node would exceed Options.MaxMemberBindings or
	// Options.MaxMemberBytes, although the tree has room for others.
	// errors.Is(err, ErrTooLarge) holds for it too.
	ErrQuota error = quotaError{}

	// ErrClosed is returned by calls on a Tree after Close, or after its
	// Cluster was shut down.
	ErrClosed = errors.New("naming: tree closed")

	// ErrSlowWatcher is reported by Watcher.Err when a watcher fell so far
	// behind (Options.WatchBuffer events) that it was dropped.
	ErrSlowWatcher = errors.New("naming: watcher too slow, events dropped")

	// ErrDecode is returned by LookupValue when the bound value does not
	// decode into the requested type.
	ErrDecode = errors.New("naming: value does not decode")
)

// quotaError is ErrQuota: a kind of ErrTooLarge.
type quotaError struct{}

func (quotaError) Error() string        { return "naming: member quota exceeded" }
func (quotaError) Is(target error) bool { return target == ErrTooLarge }

// BoundError is the error of a confirmed Bind (the Confirmed option) that
// another node's binding won: it names the winner as the members
// answered, which this node's own copy may not show yet (it may still
// hold a binding the winner's round found gone). errors.Is(err,
// ErrNameBound) holds.
type BoundError struct {
	Name    string
	Node    string // the node whose binding won
	Claimed uint64 // its Offer.Claimed
}

func (e *BoundError) Error() string {
	return fmt.Sprintf("%v: %q is bound by %s", ErrNameBound, e.Name, e.Node)
}

func (e *BoundError) Unwrap() error { return ErrNameBound }
