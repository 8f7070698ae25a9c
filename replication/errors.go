package replication

import (
	"errors"
	"fmt"
)

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

	// ErrClosed is returned by every call on Sessions after Shutdown.
	ErrClosed = errors.New("replication: closed")

	// ErrInvalidOptions is wrapped by Options.Validate and NewSessions for
	// every configuration mistake.
	ErrInvalidOptions = errors.New("replication: invalid options")

	// ErrTooManySessions is returned by Create, and by Save of a session
	// the middleware has not created yet, when this node already serves
	// Options.MaxSessions sessions. The error wraps ErrUnavailable too:
	// retrying later may succeed.
	ErrTooManySessions = errors.New("replication: too many sessions")
)

// Internal outcomes, never returned to callers.
var (
	errRetry     = errors.New("replication: retry")
	errStaleCopy = errors.New("replication: a peer holds a newer copy")
	errGoneCopy  = errors.New("replication: session was invalidated")
	errBusy      = errors.New("replication: cannot vouch for this copy now")
)

// droppedError says that check dropped the local copy because a peer
// holds a newer one; winner is that peer, if known.
type droppedError struct{ winner string }

func (e *droppedError) Error() string { return "replication: local copy was stale" }

func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}
