package naming

import (
	"errors"
	"fmt"

	"github.com/troupe-go/troupe/internal/wire"
)

// Every message on the naming channel is: protocolVersion, a message
// type, then a msgpack body. A node drops (and counts as foreign) a
// message of another protocol version or of a type it does not know.
const protocolVersion byte = 1

// Message types. Append only: the values are on the wire.
const (
	// Broadcasts.
	msgChange msgType = 1 // one node-scoped change by its owner (the sender)
	msgClust  msgType = 2 // one cluster-scoped write
	msgBeacon msgType = 3 // the sender's version, state hash and cluster hash
	msgRetire msgType = 4 // the sender's tree closed: drop its bindings
	// Direct messages (Channel.Send).
	msgFetchOwner msgType = 5 // "send me your bindings since version V"
	msgOwnerData  msgType = 6 // one chunk of the answer
	msgDigestReq  msgType = 7 // "here is my digest, send me yours"
	msgDigest     msgType = 8 // the answer to msgDigestReq
	msgFetchClust msgType = 9 // "send me these cluster-scoped buckets / names"
	msgClustData  msgType = 10
	msgConfirm    msgType = 11 // "apply my binding and tell me who holds the name" (Bind with Confirmed)
	msgConfirmAck msgType = 12 // the answer to msgConfirm
)

type msgType byte

// recWire is one node-scoped record on the wire. D marks a deletion
// (in deltas). In a msgChange whose value is too large for gossip, X is
// empty and Big set: receivers fetch it from the owner.
type recWire struct {
	N   string `codec:"n"`
	V   uint64 `codec:"v"` // the owner's version of this change
	B   uint64 `codec:"b"` // HLC when the owner first bound the name
	T   uint64 `codec:"t"` // HLC of this write
	F   uint8  `codec:"f,omitempty"`
	X   []byte `codec:"x,omitempty"`
	D   bool   `codec:"d,omitempty"`
	Big bool   `codec:"g,omitempty"`
}

// Record flags.
const flagClusterable uint8 = 1

// crecWire is one cluster-scoped record (or tombstone) on the wire.
type crecWire struct {
	N   string `codec:"n"`
	W   string `codec:"w"` // writer
	O   string `codec:"o"` // the node whose Bind started the lineage
	B   uint64 `codec:"b"` // HLC of the lineage's first bind
	T   uint64 `codec:"t"` // HLC of this write
	X   []byte `codec:"x,omitempty"`
	D   bool   `codec:"d,omitempty"`
	Big bool   `codec:"g,omitempty"`
}

type changeMsg struct {
	I uint64  `codec:"i"` // owner incarnation
	R recWire `codec:"r"`
}

type clustMsg struct {
	R crecWire `codec:"r"`
}

type beaconMsg struct {
	I  uint64 `codec:"i"`
	V  uint64 `codec:"v"`
	H  uint64 `codec:"h"`
	CH uint64 `codec:"c"` // hash of all cluster-scoped records
}

type retireMsg struct {
	I uint64 `codec:"i"`
}

type fetchOwnerMsg struct {
	Req   uint64 `codec:"q"`
	I     uint64 `codec:"i"` // the incarnation the requester has (0: none)
	Since uint64 `codec:"s"`
}

type ownerDataMsg struct {
	Req  uint64    `codec:"q"`
	I    uint64    `codec:"i"`
	V    uint64    `codec:"v"` // the owner's version this answer brings the requester to
	Full bool      `codec:"f,omitempty"`
	Seq  int       `codec:"n"`
	Last bool      `codec:"l,omitempty"`
	Recs []recWire `codec:"r"`
}

type ownerDigest struct {
	N string `codec:"n"`
	I uint64 `codec:"i"`
	V uint64 `codec:"v"`
	H uint64 `codec:"h"`
}

// digestMsg is a node's summary of its copy: per owner (incarnation,
// highest version, state hash), and the cluster-scoped records hashed
// into numBuckets buckets (omitted when it has none). It is what the
// push/pull exchange carries, so its size depends on the number of nodes,
// never on the number of bindings.
type digestMsg struct {
	Owners  []ownerDigest `codec:"o"`
	CH      uint64        `codec:"c"`
	Buckets []uint64      `codec:"b,omitempty"`
}

type fetchClustMsg struct {
	Buckets []int    `codec:"b,omitempty"`
	Names   []string `codec:"n,omitempty"`
}

type clustDataMsg struct {
	Recs []crecWire `codec:"r"`
}

// confirmMsg carries the sender's own record of a confirmed Bind, as a
// msgChange would, with the request it belongs to.
type confirmMsg struct {
	Q uint64  `codec:"q"`
	I uint64  `codec:"i"`
	R recWire `codec:"r"`
	// Ask: R holds only the name; the sender binds nothing and asks who
	// holds it.
	Ask bool `codec:"a,omitempty"`
}

// confirmAckMsg answers a confirmMsg: whether the requester's record is
// in the answering node's copy (S), and which record comes first for
// the name there (node W, first bound at B; W is "" when none). When W is neither side, the
// winner's record travels along (WI, WR), so that the requester's copy
// agrees at once.
type confirmAckMsg struct {
	Q  uint64   `codec:"q"`
	N  string   `codec:"n"`
	S  bool     `codec:"s,omitempty"`
	W  string   `codec:"w"`
	B  uint64   `codec:"b"`
	WI uint64   `codec:"wi,omitempty"`
	WR *recWire `codec:"wr,omitempty"`
	I  uint64   `codec:"i,omitempty"` // the answering member's incarnation
}

const numBuckets = 256

// Decoding limits beyond the options: a message may not carry more than
// this many records or owners.
const (
	maxRecsPerMsg   = 1 << 20
	maxOwnersPerMsg = 1 << 14
)

var errForeign = errors.New("naming: foreign message")

func encodeMsg(t msgType, body any) ([]byte, error) {
	b, err := wire.Marshal(body)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 2+len(b))
	out = append(out, protocolVersion, byte(t))
	return append(out, b...), nil
}

// decodeMsg parses and checks one message. It returns errForeign for
// another protocol version or an unknown type, and another error for a
// malformed body; it never panics. maxValue bounds values.
func decodeMsg(b []byte, maxValue int) (msgType, any, error) {
	if len(b) < 2 {
		return 0, nil, errors.New("naming: short message")
	}
	if b[0] != protocolVersion {
		return 0, nil, fmt.Errorf("%w: protocol version %d", errForeign, b[0])
	}
	t, body := msgType(b[1]), b[2:]
	var v any
	var err error
	switch t {
	case msgChange:
		var m changeMsg
		if err = wire.Unmarshal(body, &m); err == nil {
			err = checkRec(&m.R, maxValue, true)
		}
		v = &m
	case msgClust:
		var m clustMsg
		if err = wire.Unmarshal(body, &m); err == nil {
			err = checkCrec(&m.R, maxValue, true)
		}
		v = &m
	case msgBeacon:
		var m beaconMsg
		err = wire.Unmarshal(body, &m)
		v = &m
	case msgRetire:
		var m retireMsg
		err = wire.Unmarshal(body, &m)
		v = &m
	case msgFetchOwner:
		var m fetchOwnerMsg
		err = wire.Unmarshal(body, &m)
		v = &m
	case msgOwnerData:
		var m ownerDataMsg
		if err = wire.Unmarshal(body, &m); err == nil {
			if len(m.Recs) > maxRecsPerMsg || m.Seq < 0 {
				err = errors.New("naming: bad owner data header")
			}
			for i := range m.Recs {
				if err == nil {
					err = checkRec(&m.Recs[i], maxValue, false)
				}
			}
		}
		v = &m
	case msgDigestReq, msgDigest:
		var m digestMsg
		if err = wire.Unmarshal(body, &m); err == nil {
			err = checkDigest(&m)
		}
		v = &m
	case msgFetchClust:
		var m fetchClustMsg
		if err = wire.Unmarshal(body, &m); err == nil {
			if len(m.Buckets) > numBuckets || len(m.Names) > maxRecsPerMsg {
				err = errors.New("naming: too many buckets or names")
			}
			for _, bk := range m.Buckets {
				if bk < 0 || bk >= numBuckets {
					err = fmt.Errorf("naming: bucket %d out of range", bk)
				}
			}
			for _, n := range m.Names {
				if err == nil {
					err = checkName(n)
				}
			}
		}
		v = &m
	case msgClustData:
		var m clustDataMsg
		if err = wire.Unmarshal(body, &m); err == nil {
			if len(m.Recs) > maxRecsPerMsg {
				err = errors.New("naming: too many records")
			}
			for i := range m.Recs {
				if err == nil {
					err = checkCrec(&m.Recs[i], maxValue, false)
				}
			}
		}
		v = &m
	case msgConfirm:
		var m confirmMsg
		if err = wire.Unmarshal(body, &m); err == nil {
			if m.Ask {
				err = checkName(m.R.N)
			} else {
				err = checkRec(&m.R, maxValue, false)
			}
		}
		v = &m
	case msgConfirmAck:
		var m confirmAckMsg
		if err = wire.Unmarshal(body, &m); err == nil {
			err = checkName(m.N)
			if err == nil && len(m.W) > 256 {
				err = errors.New("naming: bad confirmation winner")
			}
			if err == nil && m.WR != nil {
				err = checkRec(m.WR, maxValue, false)
			}
		}
		v = &m
	default:
		return 0, nil, fmt.Errorf("%w: message type %d", errForeign, t)
	}
	if err != nil {
		return 0, nil, err
	}
	return t, v, nil
}

func checkName(n string) error {
	norm, err := normalize(n, false)
	if err != nil {
		return err
	}
	if norm != n {
		return fmt.Errorf("%w: %q is not normalised", ErrInvalidName, n)
	}
	return nil
}

// errOversized marks a record whose value is over this node's limit.
var errOversized = errors.New("naming: value over MaxValueSize")

func checkRec(r *recWire, maxValue int, big bool) error {
	if err := checkName(r.N); err != nil {
		return err
	}
	if len(r.X) > maxValue {
		return errOversized
	}
	if r.V == 0 || (r.Big && !big) || (r.Big && r.D) {
		return errors.New("naming: bad record header")
	}
	return nil
}

func checkCrec(r *crecWire, maxValue int, big bool) error {
	if err := checkName(r.N); err != nil {
		return err
	}
	if len(r.X) > maxValue {
		return errOversized
	}
	if r.W == "" || len(r.W) > 256 || (r.Big && !big) || (r.Big && r.D) {
		return errors.New("naming: bad cluster record header")
	}
	return nil
}

func checkDigest(d *digestMsg) error {
	if len(d.Owners) > maxOwnersPerMsg {
		return errors.New("naming: too many owners in digest")
	}
	if len(d.Buckets) != 0 && len(d.Buckets) != numBuckets {
		return fmt.Errorf("naming: digest has %d buckets, want %d", len(d.Buckets), numBuckets)
	}
	for _, o := range d.Owners {
		if o.N == "" || len(o.N) > 256 {
			return errors.New("naming: bad owner in digest")
		}
	}
	return nil
}
