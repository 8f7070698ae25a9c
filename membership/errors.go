package membership

import "errors"

// Errors returned by this package. Match them with errors.Is; the returned
// error usually wraps one of these with details.
var (
	// ErrInvalidConfig is wrapped by Config.Validate and New for every
	// configuration mistake.
	ErrInvalidConfig = errors.New("membership: invalid config")

	// ErrMetaTooLarge is returned by Validate, New and UpdateMeta when the
	// encoded member metadata exceeds memberlist's 512-byte limit.
	ErrMetaTooLarge = errors.New("membership: metadata too large")

	// ErrNameInUse is returned by New and Join when another live member
	// already uses this node's name.
	ErrNameInUse = errors.New("membership: node name in use by a live member")

	// ErrNoPeers is returned by Join when none of the given addresses
	// answered.
	ErrNoPeers = errors.New("membership: no peer answered")

	// ErrShutdown is returned by calls on a Cluster that has left or been
	// shut down.
	ErrShutdown = errors.New("membership: cluster is shut down")

	// ErrChannelExists is returned by Channel when the name is taken.
	ErrChannelExists = errors.New("membership: channel already registered")

	// ErrUnknownMember is returned by Channel.Send and Channel.Call for a
	// node that is not a live member.
	ErrUnknownMember = errors.New("membership: unknown member")

	// ErrUnreachable is returned by Channel.Send and Channel.Call when the
	// member could not be dialled, refused the handshake (another cluster
	// key or CA), or its connection broke or went silent before the
	// answer came: then the call may or may not have run there.
	ErrUnreachable = errors.New("membership: member unreachable")

	// ErrWouldBlock is returned by Channel.TrySend when the message could
	// not be sent without waiting; it was not sent.
	ErrWouldBlock = errors.New("membership: send would block")

	// ErrMessageTooLarge is returned by Channel.Broadcast for a message that
	// does not fit in one gossip packet, and by Channel.Send and
	// Channel.Call above the peer's MaxMessageSize.
	ErrMessageTooLarge = errors.New("membership: message too large")

	// ErrSlowSubscriber is reported by Subscription.Err when a subscriber
	// fell so far behind that its queue overflowed and it was dropped.
	ErrSlowSubscriber = errors.New("membership: subscriber too slow, events dropped")
)
