package replication

import (
	"errors"
	"strings"
)

// channelName is the membership channel that carries the session
// protocol: calls travel as "<channelName>/<method>". On the wire.
const channelName = "troupe.sessions"

// Methods of the session protocol between nodes, calls on channelName.
// Append only: they are on the wire.
const (
	methodApply      = "apply"      // primary → secondary: a change, or a full copy
	methodBatch      = "batch"      // primary → secondary: several applies, in order
	methodVerify     = "verify"     // primary → secondary: do you still back my copy?
	methodTouch      = "touch"      // primary → secondary: these sessions were used
	methodDrop       = "drop"       // forget your copy: invalidated, expired or moved
	methodTake       = "take"       // hand your copy over: I become the primary
	methodResolve    = "resolve"    // after a partition heals: whose copy wins
	methodInvalidate = "invalidate" // invalidate a session on behalf of another node
	methodPing       = "ping"       // are your sessions up?
	methodConfirm    = "confirm"    // secondary → primary: am I still your secondary for these?
	methodDown       = "down"       // do you, too, see this peer down?
)

// Errors of the session protocol, kept by identity across a call (see
// callErrors).
var (
	// errPeerClosed: the peer's Sessions are shut down, its node runs.
	errPeerClosed = errors.New("replication: the peer's sessions are shut down")
	// errBadRequest: a request the peer could not decode or does not
	// know.
	errBadRequest = errors.New("replication: bad request")
	// errRefused: the peer does not serve this sender: it is not a live
	// member that holds sessions (as the peer sees membership: it may
	// not have seen the sender's tag yet, or may have declared it
	// failed), or the request names another node as its sender.
	errRefused = errors.New("replication: request refused")
)

// Errors that a handler returns and the caller tells apart by identity
// (membership.WithErrors gives each a code on the wire, its index + 1).
// Every error the handler returns matches one of them, so that a
// membership.RemoteError that matches none comes from the peer's
// transport itself: the peer runs no sessions channel (see notServing).
// Append only: the codes are on the wire.
var callErrors = []error{
	errPeerClosed, // the peer's Sessions are shut down
	errBadRequest, // malformed request, unknown method
	errRefused,    // the sender is not a live member holding sessions, or names another
}

// status is a peer's answer about one session. Append only.
type status uint8

const (
	stOK       status = iota // applied, verified, found, or: your copy wins
	stGap                    // apply: I miss earlier changes, send a full copy
	stStale                  // your copy is outdated: drop it
	stGone                   // the session was invalidated
	stUnknown                // I hold no copy
	stBusy                   // take: I cannot vouch for my copy now, ask another node
	stTooLarge               // apply: the session would exceed my MaxSessionSize
)

func (s status) String() string {
	switch s {
	case stOK:
		return "ok"
	case stGap:
		return "gap"
	case stStale:
		return "stale"
	case stGone:
		return "gone"
	case stUnknown:
		return "unknown"
	case stBusy:
		return "busy"
	case stTooLarge:
		return "too large"
	}
	return "status?"
}

// The messages on the hot path (applyReq, reply) are encoded as msgpack
// arrays rather than maps: decoding field names dominated the cost of a
// Save. Their fields are therefore positional: only ever append new ones
// at the end; a decoder fills fields missing from an older sender with
// zero values. codec.go encodes and decodes both by hand, in the same
// bytes: a field added here must be added there.
//
// Every request names its sender in From, for nodes of earlier
// versions; the receiver takes the sender from the transport's handshake
// instead (see "Identity" in server.go). Every reply carries the
// replier's lease generation for that sender and how many secondary
// copies it holds, which placement uses.

// applyReq sends a change (Full false: the attributes set and deleted
// since version Base) or the whole session (Full true) to the secondary.
type applyReq struct {
	//lint:ignore U1000 go-msgpack reads its tag: encode as an array
	_struct   bool     `codec:",toarray"` // positional encoding: fields are append-only
	From      string   `codec:"f"`
	Inc       uint64   `codec:"i"` // the sender's incarnation: random per Sessions
	Key       string   `codec:"k"`
	Epoch     uint64   `codec:"e"`
	Members   int      `codec:"m"`
	Base      uint64   `codec:"b,omitempty"`
	Version   uint64   `codec:"v"`
	Full      bool     `codec:"u,omitempty"`
	Set       attrs    `codec:"s,omitempty"` // a map of names to values on the wire
	Del       []string `codec:"d,omitempty"`
	Contested []string `codec:"c,omitempty"` // full copies only
}

type reply struct {
	//lint:ignore U1000 go-msgpack reads its tag: encode as an array
	_struct bool   `codec:",toarray"` // positional encoding: fields are append-only
	St      status `codec:"s"`
	G       uint64 `codec:"g"` // the replier's lease generation for the caller
	N       int    `codec:"n"` // secondary copies the replier holds
}

type batchReq struct {
	//lint:ignore U1000 go-msgpack reads its tag: encode as an array
	_struct bool       `codec:",toarray"` // positional encoding: fields are append-only
	From    string     `codec:"f"`
	Items   []applyReq `codec:"i"`
}

// batchReply answers a batch item by item: G holds each item's lease
// generation, read under that session's lock as for a single apply.
type batchReply struct {
	//lint:ignore U1000 go-msgpack reads its tag: encode as an array
	_struct bool     `codec:",toarray"` // positional encoding: fields are append-only
	St      []status `codec:"s"`
	G       []uint64 `codec:"g"`
	N       int      `codec:"n"`
}

// verifyReq asks the secondary whether it still holds the caller's copy
// at this epoch as its secondary.
type verifyReq struct {
	From    string `codec:"f"`
	Key     string `codec:"k"`
	Epoch   uint64 `codec:"e"`
	Members int    `codec:"m"`
}

// downReq asks whether the replier, too, sees Peer down (not a live
// member, or suspected by failure detection), before the caller moves
// session Key to Epoch; and whether the replier holds a copy of Key of
// another lineage at Epoch or later (Newer), which forbids the move.
type downReq struct {
	From  string `codec:"f"`
	Peer  string `codec:"p"`
	Key   string `codec:"k,omitempty"`
	Epoch uint64 `codec:"e,omitempty"`
}

type downReply struct {
	Down  bool `codec:"d"`
	Newer bool `codec:"n,omitempty"`
}

type touchReq struct {
	From string   `codec:"f"`
	Keys []string `codec:"k"`
}

// dropReq removes the receiver's copy if it ranks at most (Epoch,
// Members, Primary); Gone removes it whatever its rank and remembers the
// key as invalidated.
type dropReq struct {
	From    string `codec:"f"`
	Key     string `codec:"k"`
	Epoch   uint64 `codec:"e"`
	Members int    `codec:"m"`
	Primary string `codec:"p"`
	Gone    bool   `codec:"x,omitempty"`
}

// takeReq asks for a session: the caller becomes its primary.
// Unreachable lists the nodes the caller could not reach, so that the
// receiver does not try them again.
type takeReq struct {
	From        string   `codec:"f"`
	Inc         uint64   `codec:"i"`
	Key         string   `codec:"k"`
	Unreachable []string `codec:"x,omitempty"`
}

// takeReply hands a session over. The replier has demoted its copy to a
// secondary copy of the caller's at (Epoch, Members), the caller's new
// lineage; the caller installs its primary copy at exactly that rank.
// Secondary is the secondary of the replier's copy when it was the
// primary (for a copy kept from an earlier handover, of the copy it was),
// which the caller makes its own or tells to drop its outdated copy; Kept
// is the node that demoted its copy (the replier, or the primary it asked
// on the caller's behalf). Since is the epoch the handed copy weighs
// against others (state.standing): a caller that holds a kept copy of
// its own from a later epoch does not install an older one.
type takeReply struct {
	St        status            `codec:"s"`
	Epoch     uint64            `codec:"e"`
	Since     uint64            `codec:"se,omitempty"`
	Members   int               `codec:"m"`
	Secondary string            `codec:"q,omitempty"`
	Kept      string            `codec:"k,omitempty"`  // the node keeping a copy in the caller's lineage
	Moved     string            `codec:"mv,omitempty"` // stUnknown: where the session went, if known
	Inc       uint64            `codec:"i"`            // the replier's incarnation
	Version   uint64            `codec:"v"`
	Attrs     map[string][]byte `codec:"a"`
	Contested []string          `codec:"c,omitempty"`
}

type rankWire struct {
	Key     string `codec:"k"`
	Epoch   uint64 `codec:"e"`
	Members int    `codec:"m"`
	Primary string `codec:"p"`
}

type resolveReq struct {
	From  string     `codec:"f"`
	Items []rankWire `codec:"i"`
}

type resolveReply struct {
	St []status `codec:"s"` // per item: stOK (the caller's copy wins) or stStale
}

// confirmReq asks a primary whether the sender is still the secondary of
// these copies, at these epochs.
type confirmReq struct {
	From  string     `codec:"f"`
	Items []rankWire `codec:"i"` // Key and Epoch only
}

// confirmReply answers per item: stOK (yes), stStale (the primary's copy
// moved on: drop yours), stGone, or stUnknown (no copy here; I is the
// replier's incarnation, so that a copy made by an earlier incarnation,
// which lost it in a restart, is kept).
type confirmReply struct {
	St []status `codec:"s"`
	I  uint64   `codec:"i"`
}

type invalidateReq struct {
	From string `codec:"f"`
	Key  string `codec:"k"`
}

// rank orders two copies of one session that may have diverged: the one
// with the higher epoch wins; at equal epochs the one whose owner saw
// more live members when it took the epoch (the larger side of a
// partition); then the primary with the smaller name. Copies in the same
// lineage (same epoch and primary) rank equal.
type rank struct {
	epoch   uint64
	members int
	primary string
}

func (a rank) cmp(b rank) int {
	switch {
	case a.epoch != b.epoch:
		if a.epoch < b.epoch {
			return -1
		}
		return 1
	case a.members != b.members:
		if a.members < b.members {
			return -1
		}
		return 1
	}
	return -strings.Compare(a.primary, b.primary)
}
