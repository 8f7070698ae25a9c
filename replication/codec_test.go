package replication

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/wire"
)

// reflectApply and reflectReply are applyReq and reply without their
// hand-written codec: wire encodes and decodes them with go-msgpack, by
// reflection, as older nodes do.
type (
	reflectApply applyReq
	reflectReply reply
)

// applySamples covers every field, empty and nil maps and slices, and the
// boundaries of each size class of integers, strings and binaries.
func applySamples() []applyReq {
	long := strings.Repeat("x", 300)
	out := []applyReq{
		{},
		{From: "node-a", Inc: 1, Key: newKey(), Epoch: 7, Members: 3, Base: 41, Version: 42,
			Set: map[string][]byte{"cart": bytes.Repeat([]byte{7}, 115)}},
		{From: "a", Key: "k", Epoch: 1, Full: true, Set: map[string][]byte{"nil": nil}, Contested: []string{"c"}},
		{Set: map[string][]byte{"empty": {}}, Del: []string{}, Contested: []string{}},
		{Set: map[string][]byte{}, Del: []string{"a", "", long}},
		{Set: map[string][]byte{long: make([]byte, 70000)}},
		{From: strings.Repeat("f", 31), Key: strings.Repeat("k", 32)},
		{From: strings.Repeat("f", 255), Key: strings.Repeat("k", 256)},
		{From: strings.Repeat("f", 65535), Key: strings.Repeat("k", 65536)},
		{Del: make([]string, 15)},
		{Del: make([]string, 16), Contested: make([]string, 65536)},
	}
	uints := []uint64{0, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}
	ints := []int{0, 1, 127, 128, 255, 256, math.MaxInt16, math.MaxInt16 + 1, math.MaxInt32, math.MaxInt32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, math.MinInt16, math.MinInt16 - 1, math.MinInt32, math.MinInt32 - 1, math.MinInt64}
	for _, u := range uints {
		out = append(out, applyReq{Inc: u, Epoch: u, Base: u, Version: u})
	}
	for _, i := range ints {
		out = append(out, applyReq{Members: i})
	}
	return out
}

func replySamples() []reply {
	var out []reply
	for _, st := range []status{stOK, stBusy, math.MaxUint8} {
		for _, g := range []uint64{0, 128, math.MaxUint64} {
			for _, n := range []int{0, -1, 1 << 20, math.MinInt64} {
				out = append(out, reply{St: st, G: g, N: n})
			}
		}
	}
	return out
}

// TestApplyWireMatchesGoMsgpack checks that the hand-written encoder
// writes go-msgpack's bytes, and that either decoder reads either's.
func TestApplyWireMatchesGoMsgpack(t *testing.T) {
	for _, in := range applySamples() {
		old, err := wire.Marshal((*reflectApply)(&in))
		require.NoError(t, err)
		b, err := wire.Marshal(&in)
		require.NoError(t, err)
		require.Equal(t, old, b, "%+v", in)

		var fast applyReq
		require.True(t, fast.DecodeWire(old))
		var slow reflectApply
		require.NoError(t, wire.Unmarshal(b, &slow))
		require.Equal(t, applyReq(slow), fast)
		require.Equal(t, emptyAsNil(in), fast)
	}
}

// TestApplyWireManyAttributes compares decoded values: go-msgpack writes
// a map of several entries in Go's random order, so bytes differ.
func TestApplyWireManyAttributes(t *testing.T) {
	in := applyReq{From: "a", Key: "k", Epoch: 1, Version: 2, Full: true, Set: map[string][]byte{}}
	for i := range 40 {
		in.Set[strings.Repeat("a", i)] = bytes.Repeat([]byte{byte(i)}, i*10)
	}
	old, err := wire.Marshal((*reflectApply)(&in))
	require.NoError(t, err)
	b, err := wire.Marshal(&in)
	require.NoError(t, err)
	require.Len(t, b, len(old))

	var fast applyReq
	require.NoError(t, wire.Unmarshal(old, &fast))
	require.Equal(t, in, fast)
	var slow reflectApply
	require.NoError(t, wire.Unmarshal(b, &slow))
	require.Equal(t, in, applyReq(slow))
}

func TestReplyWireMatchesGoMsgpack(t *testing.T) {
	for _, in := range replySamples() {
		old, err := wire.Marshal(reflectReply(in))
		require.NoError(t, err)
		b, err := wire.Marshal(in)
		require.NoError(t, err)
		require.Equal(t, old, b, "%+v", in)

		var fast reply
		require.NoError(t, wire.Unmarshal(old, &fast))
		require.Equal(t, in, fast)
		var slow reflectReply
		require.NoError(t, wire.Unmarshal(b, &slow))
		require.Equal(t, in, reply(slow))
	}
}

// TestWireOtherForms checks that what the hand-written decoders decline
// still decodes, through go-msgpack: a struct from an older sender with
// fewer fields, and one encoded as a map.
func TestWireOtherForms(t *testing.T) {
	short := []byte{0x92, 0x01, 0x05} // reply of an older sender: St, G
	var r reply
	require.False(t, r.DecodeWire(short))
	require.NoError(t, wire.Unmarshal(short, &r))
	require.Equal(t, reply{St: 1, G: 5}, r)

	asMap := []byte{0x82, 0xa1, 's', 0x02, 0xa1, 'g', 0x09}
	r = reply{}
	require.False(t, r.DecodeWire(asMap))
	require.NoError(t, wire.Unmarshal(asMap, &r))
	require.Equal(t, reply{St: 2, G: 9}, r)

	b, err := wire.Marshal(&applyReq{From: "a", Key: "k"})
	require.NoError(t, err)
	var a applyReq
	for i := range b {
		require.False(t, a.DecodeWire(b[:i]), "truncated at %d", i)
		require.Equal(t, applyReq{}, a, "a declined decode leaves the value alone")
		require.Error(t, wire.Unmarshal(b[:i], &a))
		a = applyReq{}
	}
}

// emptyAsNil is in as it reads back from the wire: go-msgpack writes an
// empty omitempty map or slice as nil.
func emptyAsNil(in applyReq) applyReq {
	if len(in.Set) == 0 {
		in.Set = nil
	}
	if len(in.Del) == 0 {
		in.Del = nil
	}
	if len(in.Contested) == 0 {
		in.Contested = nil
	}
	return in
}

// FuzzDecodeWire feeds arbitrary bytes to the hand-written decoders of
// applyReq and reply: they must not panic, must decode only what
// go-msgpack decodes, to the same value, and what they decode must encode
// back to bytes that decode to it again (an empty map or slice as nil).
func FuzzDecodeWire(f *testing.F) {
	for _, in := range applySamples()[:4] {
		b, _ := wire.Marshal(&in)
		f.Add(b)
	}
	b, _ := wire.Marshal(reply{St: stGap, G: 3, N: 2})
	f.Add(b)
	f.Add([]byte{0x92, 0x01, 0x05})
	f.Fuzz(func(t *testing.T, b []byte) {
		var a applyReq
		if a.DecodeWire(b) {
			var slow reflectApply
			require.NoError(t, wire.Unmarshal(b, &slow))
			require.Equal(t, applyReq(slow), a)
			var again applyReq
			require.True(t, again.DecodeWire(a.AppendWire(nil)))
			require.Equal(t, emptyAsNil(a), again)
		}
		var r reply
		if r.DecodeWire(b) {
			var slow reflectReply
			require.NoError(t, wire.Unmarshal(b, &slow))
			require.Equal(t, reply(slow), r)
			var again reply
			require.True(t, again.DecodeWire(r.AppendWire(nil)))
			require.Equal(t, r, again)
		}
	})
}

// BenchmarkApplyWire encodes and decodes the request and reply of a Save
// of one 115-byte attribute, by hand and by go-msgpack's reflection.
func BenchmarkApplyWire(b *testing.B) {
	req := applyReq{From: "node-a", Inc: 1 << 40, Key: newKey(), Epoch: 7, Members: 3, Base: 41, Version: 42,
		Set: map[string][]byte{"attr-3": make([]byte, 115)}}
	rep := reply{St: stOK, G: 12, N: 100}
	bench := func(b *testing.B, req, rep, dreq, drep any) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			rb, err := wire.Append(buf[:0], req)
			if err != nil {
				b.Fatal(err)
			}
			if err := wire.Unmarshal(rb, dreq); err != nil {
				b.Fatal(err)
			}
			ab, err := wire.Append(buf[:0], rep)
			if err != nil {
				b.Fatal(err)
			}
			if err := wire.Unmarshal(ab, drep); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("hand", func(b *testing.B) { bench(b, &req, rep, new(applyReq), new(reply)) })
	b.Run("reflect", func(b *testing.B) {
		bench(b, (*reflectApply)(&req), reflectReply(rep), new(reflectApply), new(reflectReply))
	})
}
