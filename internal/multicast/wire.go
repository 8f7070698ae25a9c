package multicast

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// Wire format of one datagram:
//
//	offset  size  field
//	0       1     version (wireVersion)
//	1       1     kind (kindAnnounce)
//	2       2     body length n, big endian
//	4       n     body: msgpack map {c: cluster, n: node, a: addr,
//	              t: unix nanoseconds, r: random nonce}
//	4+n     0|32  tag: HMAC-SHA256 over bytes [0, 4+n) with the MAC key
//	              derived from a cluster key; absent without keys
//
// The whole datagram is at most MaxDatagram bytes; a longer one is
// dropped unread. The tag's presence is read from the length: exactly 0 or
// 32 bytes may follow the body.
//
// The MAC key is HMAC-SHA256(cluster key, macLabel) rather than the cluster
// key itself, which memberlist also uses for AES-GCM: one key, two
// algorithms, and a label that keeps them apart.
//
// Compatibility: versions and kinds are append-only: never renumber or
// reuse one. A receiver drops a version or kind it does not know (counted
// as Malformed). Body fields are append-only too: new keys may be added to
// the map, which older receivers skip; a key's meaning never changes.
const (
	wireVersion byte = 1 // version 1: this layout

	kindAnnounce byte = 1 // a node announces its cluster, name and address

	headerLen = 4
	tagLen    = sha256.Size

	// MaxDatagram is the largest datagram read or sent. A maximal
	// announcement (three MaxNameLen strings) is about 840 bytes.
	MaxDatagram = 1024

	macLabel = "troupe multicast announcement v1"
)

var (
	errMalformed = errors.New("multicast: malformed announcement")
	errOversized = fmt.Errorf("%w: larger than %d bytes", errMalformed, MaxDatagram)
	errVersion   = fmt.Errorf("%w: unknown version or kind", errMalformed)
	errTooLong   = errors.New("multicast: announcement too long")
)

// announcement is the body of a kindAnnounce datagram.
type announcement struct {
	Cluster string `codec:"c"`
	Node    string `codec:"n"`
	Addr    string `codec:"a"` // memberlist host:port
	Time    int64  `codec:"t"` // sender's clock, unix nanoseconds; strictly increasing per sender
	Nonce   uint64 `codec:"r"` // random: no two announcements are equal bytes
}

// packet is a decoded datagram: the announcement, the bytes the tag
// covers, and the tag (nil when unsigned).
type packet struct {
	ann    announcement
	signed []byte
	tag    []byte
}

// newHandle returns the msgpack settings used on the wire. A handle caches
// type information and is owned by one goroutine.
func newHandle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true // str8 and bin types: the msgpack spec of 2013, not the raw-only 2011 one
	return h
}

// encodeAnnouncement encodes a, signed with key unless key is empty.
func encodeAnnouncement(h *codec.MsgpackHandle, a announcement, key []byte) ([]byte, error) {
	for _, s := range []string{a.Cluster, a.Node, a.Addr} {
		if len(s) > MaxNameLen {
			return nil, fmt.Errorf("%w: field of %d bytes, at most %d", errTooLong, len(s), MaxNameLen)
		}
	}
	body := make([]byte, 0, 128)
	if err := codec.NewEncoderBytes(&body, h).Encode(&a); err != nil {
		return nil, fmt.Errorf("multicast: encoding announcement: %w", err)
	}
	out := make([]byte, 0, headerLen+len(body)+tagLen)
	out = append(out, wireVersion, kindAnnounce)
	out = binary.BigEndian.AppendUint16(out, uint16(len(body)))
	out = append(out, body...)
	if len(key) > 0 {
		out = append(out, tag(key, out)...)
	}
	if len(out) > MaxDatagram {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errTooLong, len(out), MaxDatagram)
	}
	return out, nil
}

// decodeAnnouncement checks the framing of b and decodes its body. It does
// not verify the tag (see verify), so that announcements of other clusters
// can be told apart from forged ones. All errors wrap errMalformed.
func decodeAnnouncement(h *codec.MsgpackHandle, b []byte) (packet, error) {
	if len(b) > MaxDatagram {
		return packet{}, errOversized
	}
	if len(b) < headerLen {
		return packet{}, fmt.Errorf("%w: %d bytes, shorter than the header", errMalformed, len(b))
	}
	if b[0] != wireVersion || b[1] != kindAnnounce {
		return packet{}, fmt.Errorf("%w: version %d kind %d", errVersion, b[0], b[1])
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	end := headerLen + n
	if end > len(b) {
		return packet{}, fmt.Errorf("%w: body of %d bytes in a %d-byte datagram", errMalformed, n, len(b))
	}
	var p packet
	p.signed = b[:end]
	switch rest := len(b) - end; rest {
	case 0:
	case tagLen:
		p.tag = b[end:]
	default:
		return packet{}, fmt.Errorf("%w: %d bytes after the body, want 0 or %d", errMalformed, rest, tagLen)
	}

	body := b[headerLen:end]
	d := codec.NewDecoderBytes(body, h)
	if err := d.Decode(&p.ann); err != nil {
		return packet{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if d.NumBytesRead() != len(body) {
		return packet{}, fmt.Errorf("%w: %d bytes after the msgpack body", errMalformed, len(body)-d.NumBytesRead())
	}
	if err := p.ann.check(); err != nil {
		return packet{}, err
	}
	return p, nil
}

// check validates the fields that the receiver relies on.
func (a *announcement) check() error {
	switch {
	case a.Cluster == "" || len(a.Cluster) > MaxNameLen:
		return fmt.Errorf("%w: cluster name of %d bytes", errMalformed, len(a.Cluster))
	case a.Node == "" || len(a.Node) > MaxNameLen:
		return fmt.Errorf("%w: node name of %d bytes", errMalformed, len(a.Node))
	case len(a.Addr) > MaxNameLen:
		return fmt.Errorf("%w: address of %d bytes", errMalformed, len(a.Addr))
	}
	host, port, err := net.SplitHostPort(a.Addr)
	if err != nil || host == "" {
		return fmt.Errorf("%w: address %q is not host:port", errMalformed, a.Addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%w: address %q has no valid port", errMalformed, a.Addr)
	}
	return nil
}

// verify reports whether p is acceptable under keys: unsigned when there
// are no keys, signed with one of them otherwise. A signed announcement is
// refused by a node without keys: it comes from a node with keys that
// this node could not join anyway (memberlist would drop our unencrypted
// traffic), and reporting it would only cause failing joins.
func verify(p packet, keys [][]byte) bool {
	keyed := false
	for _, k := range keys {
		if len(k) == 0 {
			continue
		}
		keyed = true
		if p.tag != nil && hmac.Equal(p.tag, tag(k, p.signed)) {
			return true
		}
	}
	return !keyed && p.tag == nil
}

// primaryKey is the first non-empty key, or nil.
func primaryKey(keys [][]byte) []byte {
	for _, k := range keys {
		if len(k) > 0 {
			return k
		}
	}
	return nil
}

// tag is the HMAC-SHA256 of msg under the MAC key derived from key.
func tag(key, msg []byte) []byte {
	d := hmac.New(sha256.New, key)
	d.Write([]byte(macLabel))
	m := hmac.New(sha256.New, d.Sum(nil))
	m.Write(msg)
	return m.Sum(nil)
}
