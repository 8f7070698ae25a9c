package replication

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/wire"
)

// reflectApply, reflectReply, reflectBatch and reflectBatchReply are
// applyReq, reply, batchReq and batchReply without their hand-written
// codecs: wire encodes and decodes them with go-msgpack, by reflection, as
// older nodes do. go-msgpack knows nothing of AppendWire and DecodeWire,
// so it also encodes and decodes a reflectBatch's items by reflection.
type (
	reflectApply      applyReq
	reflectReply      reply
	reflectBatch      batchReq
	reflectBatchReply batchReply
)

// applySamples covers every field, empty and nil maps and slices, and the
// boundaries of each size class of integers, strings and binaries.
func applySamples() []applyReq {
	long := strings.Repeat("x", 300)
	out := []applyReq{
		{},
		{From: "node-a", Inc: 1, Key: newKey(), Epoch: 7, Members: 3, Base: 41, Version: 42,
			Set: attrsOf(map[string][]byte{"cart": bytes.Repeat([]byte{7}, 115)})},
		{From: "a", Key: "k", Epoch: 1, Full: true, Set: attrsOf(map[string][]byte{"nil": nil}), Contested: []string{"c"}},
		{Set: attrsOf(map[string][]byte{"empty": {}}), Del: []string{}, Contested: []string{}},
		{Set: attrsOf(map[string][]byte{}), Del: []string{"a", "", long}},
		{Set: attrsOf(map[string][]byte{long: make([]byte, 70000)})},
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
	in := applyReq{From: "a", Key: "k", Epoch: 1, Version: 2, Full: true, Set: attrsOf(map[string][]byte{})}
	for i := range 40 {
		in.Set = in.Set.put(strings.Repeat("a", i), bytes.Repeat([]byte{byte(i)}, i*10))
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

// batchSamples covers nil and empty batches, items as sendBatchSync sends
// them (From empty, the batch's From standing for it), every applySample
// as an item, and item counts at each size class of array headers.
func batchSamples() []batchReq {
	items := applySamples()
	for i := range items {
		items[i].From = ""
	}
	change := applyReq{Inc: 1 << 40, Key: newKey(), Epoch: 7, Members: 3, Base: 41, Version: 42,
		Set: attrsOf(map[string][]byte{"cart": bytes.Repeat([]byte{7}, 115)})}
	full := applyReq{Key: newKey(), Epoch: 2, Version: 9, Full: true, Set: attrsOf(map[string][]byte{"a": nil}), Contested: []string{"b"}}
	many := func(n int) []applyReq {
		out := make([]applyReq, n)
		for i := range out {
			out[i] = change
			out[i].Version = uint64(i)
		}
		return out
	}
	return []batchReq{
		{},
		{From: "node-a"},
		{From: "node-a", Items: []applyReq{}},
		{From: "node-a", Items: []applyReq{change}},
		{From: "node-a", Items: []applyReq{change, full, {Key: "k", Del: []string{"x"}}}},
		{From: "node-a", Items: []applyReq{{From: "node-b", Key: "k"}}}, // an item's own From is written too
		{From: strings.Repeat("f", 300), Items: items},
		{From: "node-a", Items: many(15)},
		{From: "node-a", Items: many(16)},
		{From: "node-a", Items: many(300)},
	}
}

// batchReplySamples covers nil and empty slices, every status, the
// boundaries of each size class of integers, and slices at each size
// class of array headers.
func batchReplySamples() []batchReply {
	sts := []status{stOK, stGap, stStale, stGone, stUnknown, stBusy, 127, 128, math.MaxUint8}
	gs := []uint64{0, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}
	out := []batchReply{
		{},
		{St: []status{}, G: []uint64{}},
		{St: []status{}, N: 1},
		{G: []uint64{}, N: -1},
		{St: []status{stOK}, G: []uint64{12}, N: 100},
		{St: sts, G: gs, N: 3},
	}
	for _, n := range []int{15, 16, 255, 256, 65536} {
		r := batchReply{St: make([]status, n), G: make([]uint64, n)}
		for i := range n {
			r.St[i] = sts[i%len(sts)]
			r.G[i] = gs[i%len(gs)]
		}
		out = append(out, r)
	}
	for _, n := range []int{0, 127, 128, -32, -33, math.MaxInt16 + 1, math.MinInt32 - 1, math.MaxInt64, math.MinInt64} {
		out = append(out, batchReply{St: []status{stBusy}, G: []uint64{1}, N: n})
	}
	return out
}

// batchAsRead is in as it reads back from the wire: each item's empty
// omitempty maps and slices as nil.
func batchAsRead(in batchReq) batchReq {
	if in.Items != nil {
		in.Items = append([]applyReq{}, in.Items...)
		for i := range in.Items {
			in.Items[i] = emptyAsNil(in.Items[i])
		}
	}
	return in
}

func TestBatchWireMatchesGoMsgpack(t *testing.T) {
	for i, in := range batchSamples() {
		old, err := wire.Marshal(reflectBatch(in))
		require.NoError(t, err)
		b, err := wire.Marshal(in)
		require.NoError(t, err)
		require.Equal(t, old, b, "sample %d", i)
		b2, err := wire.Marshal(&in)
		require.NoError(t, err)
		require.Equal(t, b, b2)

		var fast batchReq
		require.True(t, fast.DecodeWire(old), "sample %d", i)
		var slow reflectBatch
		require.NoError(t, wire.Unmarshal(b, &slow))
		require.Equal(t, batchReq(slow), fast, "sample %d", i)
		require.Equal(t, batchAsRead(in), fast, "sample %d", i)
	}
}

func TestBatchReplyWireMatchesGoMsgpack(t *testing.T) {
	for i, in := range batchReplySamples() {
		old, err := wire.Marshal(reflectBatchReply(in))
		require.NoError(t, err)
		b, err := wire.Marshal(in)
		require.NoError(t, err)
		require.Equal(t, old, b, "sample %d", i)

		var fast batchReply
		require.True(t, fast.DecodeWire(old), "sample %d", i)
		require.Equal(t, in, fast, "sample %d", i)
		var slow reflectBatchReply
		require.NoError(t, wire.Unmarshal(b, &slow))
		require.Equal(t, in, batchReply(slow), "sample %d", i)
	}
}

// TestBatchReplyStatusForm pins down the form found by the test above:
// go-msgpack writes a []status as an array of integers, not as binary as
// it would a []uint8; nil as nil, and an empty slice as an empty array.
func TestBatchReplyStatusForm(t *testing.T) {
	b, err := wire.Marshal(reflectBatchReply{St: []status{stOK, stBusy, 200}, G: []uint64{}, N: 1})
	require.NoError(t, err)
	require.Equal(t, []byte{0x93, 0x93, 0x00, 0x05, 0xcc, 0xc8, 0x90, 0x01}, b)
	b, err = wire.Marshal(reflectBatchReply{})
	require.NoError(t, err)
	require.Equal(t, []byte{0x93, 0xc0, 0xc0, 0x00}, b)
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

	// A batch reply whose statuses come as binary, as go-msgpack would
	// write a []uint8, and one whose statuses come as a string.
	for _, st := range [][]byte{{0xc4, 0x02, 0x00, 0x05}, {0xa2, 0x00, 0x05}} {
		in := append(append([]byte{0x93}, st...), 0x92, 0x01, 0x02, 0x07)
		var br batchReply
		require.False(t, br.DecodeWire(in))
		require.NoError(t, wire.Unmarshal(in, &br))
		require.Equal(t, batchReply{St: []status{stOK, stBusy}, G: []uint64{1, 2}, N: 7}, br)
	}

	// A batch one of whose items comes from an older sender, with fewer
	// fields: go-msgpack decodes the whole batch.
	item := []byte{0x9a, 0xa0, 0x01, 0xa1, 'k', 0x02, 0x03, 0x00, 0x04, 0xc2, 0xc0, 0xc0}
	good, err := wire.Marshal(&applyReq{Key: "j", Version: 5})
	require.NoError(t, err)
	in := append(append([]byte{0x92, 0xa1, 'n', 0x92}, good...), item...)
	var br batchReq
	require.False(t, br.DecodeWire(in))
	require.NoError(t, wire.Unmarshal(in, &br))
	require.Equal(t, batchReq{From: "n", Items: []applyReq{{Key: "j", Version: 5}, {Inc: 1, Key: "k", Epoch: 2, Members: 3, Version: 4}}}, br)

	// Truncated batches and replies are declined, untouched, and go-msgpack
	// errs on them.
	b, err = wire.Marshal(batchSamples()[4])
	require.NoError(t, err)
	for i := range b {
		br = batchReq{}
		require.False(t, br.DecodeWire(b[:i]), "truncated at %d", i)
		require.Equal(t, batchReq{}, br)
		require.Error(t, wire.Unmarshal(b[:i], &br))
	}
	b, err = wire.Marshal(batchReplySamples()[5])
	require.NoError(t, err)
	for i := range b {
		var rr batchReply
		require.False(t, rr.DecodeWire(b[:i]), "truncated at %d", i)
		require.Equal(t, batchReply{}, rr)
		require.Error(t, wire.Unmarshal(b[:i], &rr))
	}

	// An item count the input cannot hold is declined before allocating.
	huge := []byte{0x92, 0xa0, 0xdd, 0x7f, 0xff, 0xff, 0xff}
	huge = append(huge, bytes.Repeat([]byte{0xc0}, 100)...)
	br = batchReq{}
	require.False(t, br.DecodeWire(huge))
	require.Error(t, wire.Unmarshal(huge, &br))
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
// applyReq, reply, batchReq and batchReply: they must not panic, must
// decode only what go-msgpack decodes, to the same value, and what they
// decode must encode back to bytes that decode to it again (an empty
// omitempty map or slice as nil).
func FuzzDecodeWire(f *testing.F) {
	for _, in := range applySamples()[:4] {
		b, _ := wire.Marshal(&in)
		f.Add(b)
	}
	b, _ := wire.Marshal(reply{St: stGap, G: 3, N: 2})
	f.Add(b)
	f.Add([]byte{0x92, 0x01, 0x05})
	for _, in := range batchSamples()[:6] {
		b, _ := wire.Marshal(in)
		f.Add(b)
	}
	for _, in := range batchReplySamples()[:6] {
		b, _ := wire.Marshal(in)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		same := func(r reply) reply { return r }
		sameBatch := func(r batchReply) batchReply { return r }
		checkFastDecode(t, b, func(r reflectApply) applyReq { return applyReq(r) }, emptyAsNil)
		checkFastDecode(t, b, func(r reflectReply) reply { return reply(r) }, same)
		checkFastDecode(t, b, func(r reflectBatch) batchReq { return batchReq(r) }, batchAsRead)
		checkFastDecode(t, b, func(r reflectBatchReply) batchReply { return batchReply(r) }, sameBatch)
	})
}

// checkFastDecode is FuzzDecodeWire's check of one message type T, whose
// reflection-only twin is R (fromSlow converts): if T's hand-written
// decoder accepts b, go-msgpack decodes b to the same value, and the
// value encodes back to bytes that decode to it again (as asRead says it
// reads back).
func checkFastDecode[T, R any](t *testing.T, b []byte, fromSlow func(R) T, asRead func(T) T) {
	var v T
	if !any(&v).(wire.FastDecoder).DecodeWire(b) {
		return
	}
	var slow R
	require.NoError(t, wire.Unmarshal(b, &slow))
	require.Equal(t, fromSlow(slow), v)
	enc, err := wire.Marshal(&v)
	require.NoError(t, err)
	var again T
	require.True(t, any(&again).(wire.FastDecoder).DecodeWire(enc))
	require.Equal(t, asRead(v), again)
}

// BenchmarkApplyWire encodes and decodes the request and reply of a Save
// of one 115-byte attribute, by hand and by go-msgpack's reflection,
// decoding into the same values each time (which lets go-msgpack reuse
// their map and slices).
func BenchmarkApplyWire(b *testing.B) {
	req := applyReq{From: "node-a", Inc: 1 << 40, Key: newKey(), Epoch: 7, Members: 3, Base: 41, Version: 42,
		Set: attrsOf(map[string][]byte{"attr-3": make([]byte, 115)})}
	rep := reply{St: stOK, G: 12, N: 100}
	b.Run("hand", func(b *testing.B) { benchWire(b, &req, rep, same(new(applyReq)), same(new(reply))) })
	b.Run("reflect", func(b *testing.B) {
		benchWire(b, (*reflectApply)(&req), reflectReply(rep), same(new(reflectApply)), same(new(reflectReply)))
	})
}

// BenchmarkBatchWire encodes and decodes a batch of 32 changes of one
// 1 KiB attribute each, as sendBatchSync sends it, and its answer, by hand
// and by go-msgpack's reflection, decoding into new values each time as
// the server and the caller do.
func BenchmarkBatchWire(b *testing.B) {
	req := batchReq{From: "node-a", Items: make([]applyReq, 32)}
	rep := batchReply{St: make([]status, 32), G: make([]uint64, 32), N: 100}
	for i := range req.Items {
		req.Items[i] = applyReq{Inc: 1 << 40, Key: newKey(), Epoch: 7, Members: 3, Base: uint64(41 + i), Version: uint64(42 + i),
			Set: attrsOf(map[string][]byte{"attr-3": make([]byte, 1024)})}
		rep.G[i] = 12
	}
	b.Run("hand", func(b *testing.B) {
		benchWire(b, req, rep, func() any { return new(batchReq) }, func() any { return new(batchReply) })
	})
	b.Run("reflect", func(b *testing.B) {
		benchWire(b, reflectBatch(req), reflectBatchReply(rep),
			func() any { return new(reflectBatch) }, func() any { return new(reflectBatchReply) })
	})
}

// same returns a function that always returns v.
func same(v any) func() any { return func() any { return v } }

// benchWire encodes req into a reused buffer and decodes it into dreq(),
// then does the same for rep and drep().
func benchWire(b *testing.B, req, rep any, dreq, drep func() any) {
	b.ReportAllocs()
	buf := make([]byte, 0, 64<<10)
	for b.Loop() {
		rb, err := wire.Append(buf[:0], req)
		if err != nil {
			b.Fatal(err)
		}
		if err := wire.Unmarshal(rb, dreq()); err != nil {
			b.Fatal(err)
		}
		ab, err := wire.Append(buf[:0], rep)
		if err != nil {
			b.Fatal(err)
		}
		if err := wire.Unmarshal(ab, drep()); err != nil {
			b.Fatal(err)
		}
	}
}
