package replication

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// Session ids have the form
//
//	<key>!<primary>!<secondary>
//
// as in WebLogic's session cookie. key is 128 random bits in 26 characters
// of lower-case base32; primary and secondary are node ids (NodeID), and
// secondary is "none" when the session has no secondary. A load balancer
// can route a request with no state of its own: to the node whose id is
// the primary, and if it is gone, to the secondary.
const (
	keyLen    = 26 // base32 of 16 bytes, unpadded
	nodeIDLen = 6  // base32 of 30 bits
	noneID    = "none"
	idSep     = "!"
	maxIDLen  = keyLen + 2*len(idSep) + 2*nodeIDLen
)

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ID is a parsed session id. The zero value is not a valid id.
type ID struct {
	Key       string // the session's unguessable key, stable for its life
	Primary   string // node id of the primary
	Secondary string // node id of the secondary, "" when there is none
}

// String returns the id in its routed form, "<key>!<primary>!<secondary>".
func (id ID) String() string {
	sec := id.Secondary
	if sec == "" {
		sec = noneID
	}
	return id.Key + idSep + id.Primary + idSep + sec
}

// ParseID parses a routed session id. It returns an error wrapping
// ErrInvalidID unless s is exactly what ID.String produces.
func ParseID(s string) (ID, error) {
	if len(s) > maxIDLen {
		return ID{}, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidID, len(s), maxIDLen)
	}
	parts := strings.Split(s, idSep)
	if len(parts) != 3 {
		return ID{}, fmt.Errorf("%w: want <key>!<primary>!<secondary>", ErrInvalidID)
	}
	id := ID{Key: parts[0], Primary: parts[1], Secondary: parts[2]}
	if !validKey(id.Key) {
		return ID{}, fmt.Errorf("%w: key is not %d base32 characters", ErrInvalidID, keyLen)
	}
	if !validNodeID(id.Primary) {
		return ID{}, fmt.Errorf("%w: primary is not a node id", ErrInvalidID)
	}
	switch {
	case id.Secondary == noneID:
		id.Secondary = ""
	case !validNodeID(id.Secondary):
		return ID{}, fmt.Errorf("%w: secondary is neither a node id nor %q", ErrInvalidID, noneID)
	case id.Secondary == id.Primary:
		return ID{}, fmt.Errorf("%w: primary and secondary are the same node", ErrInvalidID)
	}
	return id, nil
}

// validKey reports whether k is the canonical base32 form of 16 bytes.
func validKey(k string) bool {
	if len(k) != keyLen {
		return false
	}
	var raw [16]byte
	n, err := b32.Decode(raw[:], []byte(k))
	// Decoding accepts non-zero trailing bits; re-encoding catches them,
	// so that every key has exactly one spelling.
	if err != nil || n != len(raw) {
		return false
	}
	var enc [keyLen]byte
	b32.Encode(enc[:], raw[:])
	return string(enc[:]) == k
}

func validNodeID(s string) bool {
	if len(s) != nodeIDLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// newKey returns 128 bits from crypto/rand in base32.
func newKey() string {
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // never fails since Go 1.24
	return b32.EncodeToString(raw[:])
}

// NodeID returns the short id that stands for the named node in session
// routes: the first 30 bits of SHA-256 of the name, in 6 base32
// characters. It depends on the name only, so a node restarted under the
// same name keeps its id and routes issued before the restart still reach
// it. Two live nodes whose names hash to the same id are reported at Warn
// and the one with the smaller name wins routes; name nodes so that it
// does not happen (the chance is about n²/2³¹ for n nodes).
func NodeID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return b32.EncodeToString(sum[:4])[:nodeIDLen]
}

// keyRef stands for a session key in logs and error messages: the first
// 8 hex digits of its SHA-256, which tell sessions apart in a log without
// giving anyone the key (a key, with any route, is enough to use a
// session). Log a key as keyRef(key), never as the string itself.
type keyRef string

func (k keyRef) String() string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:4])
}

// LogValue computes the hash only when the record is written.
func (k keyRef) LogValue() slog.Value { return slog.StringValue(k.String()) }
