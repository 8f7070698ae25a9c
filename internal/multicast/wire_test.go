package multicast

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	key1 = bytes.Repeat([]byte{1}, 32)
	key2 = bytes.Repeat([]byte{2}, 16)
)

func testAnnouncement() announcement {
	return announcement{Cluster: "orders", Node: "node-1", Addr: "127.0.0.1:7946", Time: 1_700_000_000_000_000_000, Nonce: 42}
}

func TestWireRoundTrip(t *testing.T) {
	h := newHandle()
	a := testAnnouncement()
	for _, key := range [][]byte{nil, key1} {
		b, err := encodeAnnouncement(h, a, key)
		require.NoError(t, err)
		assert.Equal(t, wireVersion, b[0])
		assert.Equal(t, kindAnnounce, b[1])

		p, err := decodeAnnouncement(h, b)
		require.NoError(t, err)
		assert.Equal(t, a, p.ann)
		if key == nil {
			assert.Nil(t, p.tag)
			assert.True(t, verify(p, nil))
		} else {
			assert.Len(t, p.tag, tagLen)
			assert.True(t, verify(p, [][]byte{key}))
		}
	}
}

func TestWireVerify(t *testing.T) {
	h := newHandle()
	decode := func(key []byte) packet {
		b, err := encodeAnnouncement(h, testAnnouncement(), key)
		require.NoError(t, err)
		p, err := decodeAnnouncement(h, b)
		require.NoError(t, err)
		return p
	}
	signed1, unsigned := decode(key1), decode(nil)

	assert.True(t, verify(signed1, [][]byte{key1}), "primary")
	assert.True(t, verify(signed1, [][]byte{key2, key1}), "rotation: sender still on the old key")
	assert.False(t, verify(signed1, [][]byte{key2}), "wrong key")
	assert.False(t, verify(unsigned, [][]byte{key1}), "missing tag while keyed")
	assert.False(t, verify(signed1, nil), "tag while unkeyed")
	assert.True(t, verify(unsigned, [][]byte{nil, {}}), "empty keys are no keys")

	// Any change to the signed bytes breaks the tag.
	b, err := encodeAnnouncement(h, testAnnouncement(), key1)
	require.NoError(t, err)
	for i := range len(b) - tagLen {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		p, err := decodeAnnouncement(h, c)
		if err != nil {
			continue // framing broke first
		}
		assert.False(t, verify(p, [][]byte{key1}), "byte %d flipped", i)
	}
}

func TestWireRejects(t *testing.T) {
	h := newHandle()
	valid, err := encodeAnnouncement(h, testAnnouncement(), nil)
	require.NoError(t, err)
	signed, err := encodeAnnouncement(h, testAnnouncement(), key1)
	require.NoError(t, err)
	withBody := func(mutate func(*announcement)) []byte {
		a := testAnnouncement()
		mutate(&a)
		b, err := encodeAnnouncement(h, a, nil)
		require.NoError(t, err)
		return b
	}

	for name, b := range map[string][]byte{
		"empty":             nil,
		"short header":      valid[:3],
		"oversized":         make([]byte, MaxDatagram+1),
		"unknown version":   append([]byte{wireVersion + 1}, valid[1:]...),
		"unknown kind":      append([]byte{wireVersion, kindAnnounce + 1}, valid[2:]...),
		"truncated body":    valid[:len(valid)-1],
		"partial tag":       signed[:len(signed)-1],
		"long tail":         append(bytes.Clone(signed), 0),
		"length past end":   append([]byte{wireVersion, kindAnnounce, 0xff, 0xff}, valid[4:]...),
		"garbage body":      append([]byte{wireVersion, kindAnnounce, 0, 3}, 0xc1, 0xc1, 0xc1),
		"not a map":         append([]byte{wireVersion, kindAnnounce, 0, 1}, 0x2a),
		"no cluster":        withBody(func(a *announcement) { a.Cluster = "" }),
		"no node":           withBody(func(a *announcement) { a.Node = "" }),
		"address no port":   withBody(func(a *announcement) { a.Addr = "127.0.0.1" }),
		"address port 0":    withBody(func(a *announcement) { a.Addr = "127.0.0.1:0" }),
		"address bad port":  withBody(func(a *announcement) { a.Addr = "127.0.0.1:http" }),
		"address no host":   withBody(func(a *announcement) { a.Addr = ":7946" }),
		"trailing in body":  trailingInBody(valid),
		"all zero datagram": make([]byte, 64),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := decodeAnnouncement(h, b)
			assert.ErrorIs(t, err, errMalformed)
		})
	}
}

// trailingInBody appends a byte to the body and fixes the length field, so
// the framing is right but msgpack leaves a byte unread.
func trailingInBody(valid []byte) []byte {
	b := append(bytes.Clone(valid), 0x00)
	b[3]++
	return b
}

func TestWireUnknownFieldsAreSkipped(t *testing.T) {
	// A newer sender may add keys to the body map; this receiver must
	// still read the ones it knows. Hand-built msgpack: fixmap of 6.
	var body []byte
	str := func(s string) { body = append(append(body, 0xa0|byte(len(s))), s...) }
	body = append(body, 0x86)
	str("c")
	str("orders")
	str("n")
	str("node-1")
	str("a")
	str("127.0.0.1:7946")
	str("t")
	body = append(body, 0x2a)
	str("r")
	body = append(body, 0x07)
	str("zz") // the future
	str("new")
	b := append([]byte{wireVersion, kindAnnounce, 0, byte(len(body))}, body...)

	p, err := decodeAnnouncement(newHandle(), b)
	require.NoError(t, err)
	assert.Equal(t, announcement{Cluster: "orders", Node: "node-1", Addr: "127.0.0.1:7946", Time: 42, Nonce: 7}, p.ann)
}

func TestWireLargestAnnouncementFits(t *testing.T) {
	h := newHandle()
	long := strings.Repeat("x", MaxNameLen)
	a := announcement{
		Cluster: long,
		Node:    long,
		Addr:    strings.Repeat("h", MaxNameLen-6) + ":65535",
		Time:    -1 << 63,
		Nonce:   1<<64 - 1,
	}
	b, err := encodeAnnouncement(h, a, key1)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(b), MaxDatagram)
	p, err := decodeAnnouncement(h, b)
	require.NoError(t, err)
	assert.Equal(t, a, p.ann)

	a.Node += "x"
	_, err = encodeAnnouncement(h, a, key1)
	assert.ErrorIs(t, err, errTooLong)
}
