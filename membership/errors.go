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

	// ErrUnknownMember is returned by Channel.Send for a node that is not a
	// live member.
	ErrUnknownMember = errors.New("membership: unknown member")

	// ErrMessageTooLarge is returned by Channel.Broadcast for a message that
	// does not fit in one gossip packet, and by Channel.Send above its limit.
	ErrMessageTooLarge = errors.New("membership: message too large")

	// ErrSlowSubscriber is reported by Subscription.Err when a subscriber
	// fell so far behind that its queue overflowed and it was dropped.
	ErrSlowSubscriber = errors.New("membership: subscriber too slow, events dropped")
)
