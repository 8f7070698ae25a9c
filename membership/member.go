package membership

import (
	"fmt"
	"maps"
	"strconv"

	"github.com/troupe-go/troupe/internal/wire"
)

// MemberState is what this node believes about a member.
type MemberState int

const (
	// StateAlive members answer probes (or are suspected but not yet
	// declared failed).
	StateAlive MemberState = iota
	// StateLeft members left gracefully with Leave.
	StateLeft
	// StateFailed members stopped answering and were declared failed.
	StateFailed
)

func (s MemberState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateLeft:
		return "left"
	case StateFailed:
		return "failed"
	}
	return "MemberState(" + strconv.Itoa(int(s)) + ")"
}

// Meta is the metadata a member gossips about itself. It is small (at most
// MetaMaxSize bytes encoded) and changes rarely.
type Meta struct {
	Role   string            // "manager", "worker" or any short string
	Group  string            // replication group: machine, rack or zone
	Weight int               // share in weighted load balancing
	Tags   map[string]string // small attributes, e.g. an HTTP address
}

// Member is one node of the cluster as this node sees it. Members are
// values: a Member returned by Members never changes afterwards.
type Member struct {
	Name string // unique among live members
	Addr string // advertised "ip:port" of its membership listener
	// TransportAddr is the "ip:port" of its transport, where its peers'
	// calls and direct messages go (Config.TransportAddr).
	TransportAddr string
	State         MemberState
	Meta
}

// Tag returns the value of a tag, or "".
func (m Member) Tag(key string) string { return m.Tags[key] }

// metaWire is Meta on the wire. The version lets a later release add
// fields that older nodes ignore. Field tags are short because every byte
// counts against the 512-byte limit.
type metaWire struct {
	V int               `codec:"v"`
	R string            `codec:"r,omitempty"`
	G string            `codec:"g,omitempty"`
	W int               `codec:"w,omitempty"`
	T map[string]string `codec:"t,omitempty"`
	C string            `codec:"c,omitempty"` // the transport's address
}

const metaVersion = 1

func encodeMeta(m Meta, transportAddr string) ([]byte, error) {
	b, err := wire.Marshal(metaWire{V: metaVersion, R: m.Role, G: m.Group, W: m.Weight, T: m.Tags, C: transportAddr})
	if err != nil {
		return nil, err
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: role, group, weight and tags encode to %d bytes, memberlist allows %d; shorten the tags", ErrMetaTooLarge, len(b), MetaMaxSize)
	}
	return b, nil
}

// decodeMeta reads a member's metadata. A member whose metadata cannot be
// read (a broken peer) is still a member: the caller keeps it with empty
// metadata and weight 0, so that weighted balancing skips it.
func decodeMeta(b []byte) (meta Meta, transportAddr string, err error) {
	var w metaWire
	if len(b) == 0 {
		return Meta{}, "", nil
	}
	if len(b) > MetaMaxSize { // memberlist checks only its own node's
		return Meta{}, "", fmt.Errorf("%w: %d bytes, the limit is %d", ErrMetaTooLarge, len(b), MetaMaxSize)
	}
	if err := wire.Unmarshal(b, &w); err != nil {
		return Meta{}, "", err
	}
	return Meta{Role: w.R, Group: w.G, Weight: w.W, Tags: w.T}, w.C, nil
}

func cloneTags(t map[string]string) map[string]string {
	if len(t) == 0 {
		return nil
	}
	return maps.Clone(t)
}
