package replication

import "errors"

// Errors returned by this package. Match them with errors.Is: returned
// errors usually wrap one of these with details.
var (
	// ErrNotFound is returned by Get when no node holds the session: it
	// never existed, expired, was invalidated, or every copy was lost.
	ErrNotFound = errors.New("replication: session not found")

	// ErrInvalidID is returned by ParseID, Get and Invalidate for a
	// session id that is not "<id>!<primary>!<secondary>" as Create makes
	// them.
	ErrInvalidID = errors.New("replication: invalid session id")

	// ErrTooLarge is returned by Session.Set, Session.SetValue and Save
	// when the session's attributes would exceed Options.MaxSessionSize.
	// The session is unchanged.
	ErrTooLarge = errors.New("replication: session too large")

	// ErrStale is returned by Save when this node no longer owns the
	// session the handle came from: another node took it over, it was
	// found to be an out-of-date copy (see "Epochs" in the package
	// documentation), or it was invalidated or expired. Nothing was saved;
	// Get the session again to see its current state.
	ErrStale = errors.New("replication: stale session")

	// ErrUnavailable is returned by Get, Save and Create when the nodes
	// that must take part cannot be reached before the context ends: the
	// session's secondary is unreachable but not yet declared failed, or
	// every node on the route is unreachable. Retrying later may succeed.
	ErrUnavailable = errors.New("replication: session unavailable")

	// ErrClosed is returned by every call on Sessions or Pins after
	// Shutdown.
	ErrClosed = errors.New("replication: closed")

	// ErrNotPinned is returned by Pins.Owner when a key has no owner: it
	// was never pinned, was released, or its owner failed or left.
	ErrNotPinned = errors.New("replication: key not pinned")

	// ErrNotOwner is returned by Pins.Release on a node that does not own
	// the key.
	ErrNotOwner = errors.New("replication: not the key's owner")

	// ErrInvalidKey is returned for a pin key or singleton name that is
	// not a valid naming path (see naming.ErrInvalidName, which it wraps).
	ErrInvalidKey = errors.New("replication: invalid key")

	// ErrNoQuorum is returned by Pins.Pin on a node that sees less than
	// half of the cluster (PinOptions.QuorumWindow): it may be on the
	// minority side of a partition, where it takes nothing.
	ErrNoQuorum = errors.New("replication: no quorum")

	// ErrInvalidOptions is wrapped by Options.Validate and NewSessions for
	// every configuration mistake.
	ErrInvalidOptions = errors.New("replication: invalid options")
)
