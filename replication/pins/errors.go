package pins

import "errors"

// Errors returned by this package. Match them with errors.Is: returned
// errors usually wrap one of these with details. They keep their identity
// when a remote node returns them (On).
var (
	// ErrNotPinned is returned by Owner when a key has no owner: it was
	// never pinned, was released, or its owner failed or left.
	ErrNotPinned = errors.New("pins: key not pinned")

	// ErrNotOwner is returned by Release on a node that does not own the
	// key.
	ErrNotOwner = errors.New("pins: not the key's owner")

	// ErrInvalidKey is returned for a pin key or singleton name that is
	// empty or not a valid naming path (see naming.ErrInvalidName, which
	// it then wraps).
	ErrInvalidKey = errors.New("pins: invalid key")

	// ErrNoQuorum is returned by Pin on a node that does not hold the
	// quorum (Options.QuorumWindow): it may be on the minority side of a
	// partition, where it takes nothing.
	ErrNoQuorum = errors.New("pins: no quorum")

	// ErrUnavailable is returned by Pin with On when the node chosen to
	// take the pin cannot be reached. Retrying may choose another.
	ErrUnavailable = errors.New("pins: node unavailable")

	// ErrClosed is returned by every call after Shutdown or Leave.
	ErrClosed = errors.New("pins: closed")

	// ErrInvalidOptions is wrapped by Options.Validate, New and
	// RunSingleton for every configuration mistake.
	ErrInvalidOptions = errors.New("pins: invalid options")
)

// remoteErrors are the errors that keep their identity across a call to
// another node. Append only: a code is the index in this list plus one.
var remoteErrors = []error{ErrNotPinned, ErrNotOwner, ErrInvalidKey, ErrNoQuorum, ErrUnavailable, ErrClosed}
