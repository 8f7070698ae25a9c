package naming

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/wire"
)

// sampleMessages returns one valid message of every type.
func sampleMessages(t testing.TB) [][]byte {
	enc := func(typ msgType, v any) []byte {
		b, err := encodeMsg(typ, v)
		require.NoError(t, err)
		return b
	}
	rec := recWire{N: "ejb/Orders", V: 3, B: 1 << 40, T: 1<<40 + 5, F: flagClusterable, X: []byte("http://10.0.0.1")}
	crec := crecWire{N: "cfg/db", W: "node-1", B: 1 << 40, T: 1<<40 + 9, X: []byte("postgres://")}
	return [][]byte{
		enc(msgChange, changeMsg{I: 7, R: rec}),
		enc(msgChange, changeMsg{I: 7, R: recWire{N: "a/b", V: 4, T: 9, D: true}}),
		enc(msgClust, clustMsg{R: crec}),
		enc(msgBeacon, beaconMsg{I: 7, V: 3, H: 99, CH: 12}),
		enc(msgRetire, retireMsg{I: 7}),
		enc(msgFetchOwner, fetchOwnerMsg{Req: 1, I: 7, Since: 2}),
		enc(msgOwnerData, ownerDataMsg{Req: 1, I: 7, V: 3, Full: true, Last: true, Recs: []recWire{rec}}),
		enc(msgDigestReq, digestMsg{Owners: []ownerDigest{{N: "node-1", I: 7, V: 3, H: 5}}, CH: 1, Buckets: make([]uint64, numBuckets)}),
		enc(msgDigest, digestMsg{Owners: []ownerDigest{{N: "node-2", I: 8, V: 1, H: 6}}}),
		enc(msgFetchClust, fetchClustMsg{Buckets: []int{1, 255}, Names: []string{"cfg/db"}}),
		enc(msgClustData, clustDataMsg{Recs: []crecWire{crec}}),
		enc(msgConfirm, confirmMsg{Q: 1, I: 7, R: rec}),
		enc(msgConfirm, confirmMsg{Q: 2, R: recWire{N: "x/y"}, Ask: true}),
		enc(msgConfirmAck, confirmAckMsg{Q: 1, N: "ejb/Orders", S: true, W: "node-3", B: 5, WI: 9, WR: &rec}),
	}
}

// FuzzDecodeMsg feeds arbitrary bytes to the decoder and, when they
// decode, to a core: neither may panic, and a decoded message re-encodes
// to something that decodes to the same type.
func FuzzDecodeMsg(f *testing.F) {
	for _, m := range sampleMessages(f) {
		f.Add(m)
	}
	opts, err := Options{Logger: slog.New(slog.DiscardHandler)}.withDefaults()
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, v, err := decodeMsg(data, opts.MaxValueSize)
		if err != nil {
			return
		}
		raw, err := encodeMsg(typ, v)
		require.NoError(t, err)
		typ2, _, err := decodeMsg(raw, opts.MaxValueSize)
		require.NoError(t, err)
		require.Equal(t, typ, typ2)
		c := newCore("self", 1, opts, time.Now, &counters{}, 1100)
		c.handle("node-1", typ, v)
		c.flush()
	})
}

// fuzzValue is a user value of the shape services bind: an address, a
// weight, tags, nested offers.
type fuzzValue struct {
	Addr   string
	Weight int
	Tags   map[string]string
	Ports  []uint16
	Backup *fuzzValue
	Raw    []byte
}

// sampleValues returns values as BindValue encodes them, of several types.
func sampleValues(t testing.TB) [][]byte {
	var out [][]byte
	for _, v := range []any{
		"http://10.0.0.1:8080",
		int64(-42),
		uint64(1 << 63),
		3.5,
		true,
		nil,
		[]byte{0, 1, 2},
		[]string{"a", "b"},
		map[string]any{"addr": "10.0.0.1", "weight": 3, "tags": map[string]any{"zone": "a"}},
		fuzzValue{Addr: "10.0.0.2:80", Weight: 2, Tags: map[string]string{"role": "worker"}, Ports: []uint16{80, 443},
			Backup: &fuzzValue{Addr: "10.0.0.3:80"}, Raw: []byte("x")},
	} {
		b, err := wire.Marshal(v)
		require.NoError(t, err)
		out = append(out, b)
	}
	return out
}

// FuzzDecodeValue feeds arbitrary bytes, as a bound value, to
// DecodeValue for the types services bind: it never panics, fails only
// with ErrDecode, and a value it decodes re-encodes to one that decodes
// to the same.
func FuzzDecodeValue(f *testing.F) {
	for _, v := range sampleValues(f) {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		of := Offer{Node: "node-1", Value: data}
		fuzzDecode[string](t, of)
		fuzzDecode[int64](t, of)
		fuzzDecode[[]string](t, of)
		fuzzDecode[map[string]string](t, of)
		fuzzDecode[fuzzValue](t, of)
		if _, err := DecodeValue[any](of); err != nil {
			require.ErrorIs(t, err, ErrDecode)
		}
	})
}

// fuzzDecode decodes of as a T and checks the round trip.
func fuzzDecode[T any](t *testing.T, of Offer) {
	v, err := DecodeValue[T](of)
	if err != nil {
		require.ErrorIs(t, err, ErrDecode)
		return
	}
	b, err := wire.Marshal(v)
	require.NoError(t, err, "%T decoded but does not encode", v)
	again, err := DecodeValue[T](Offer{Node: of.Node, Value: b})
	require.NoError(t, err, "%T re-encoded does not decode", v)
	require.Equal(t, v, again)
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzDecodeMsg and
// testdata/fuzz/FuzzDecodeValue when NAMING_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("NAMING_WRITE_CORPUS") != "1" {
		t.Skip("set NAMING_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	for target, seeds := range map[string][][]byte{"FuzzDecodeMsg": sampleMessages(t), "FuzzDecodeValue": sampleValues(t)} {
		dir := filepath.Join("testdata", "fuzz", target)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for i, m := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", m)
			require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644))
		}
	}
}

// Malformed, foreign and oversized messages are dropped and counted.
func TestBadMessagesCounted(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 1)
	tr := tc.trees[0]
	h := handler{tr}
	h.HandleMessage("x", nil)
	h.HandleMessage("x", []byte{protocolVersion})
	h.HandleMessage("x", []byte{9, 1, 2})                        // another protocol version
	h.HandleMessage("x", []byte{protocolVersion, 200, 0x80})     // unknown type
	h.HandleMessage("x", []byte{protocolVersion, 1, 0xff, 0x00}) // garbage body
	big, err := encodeMsg(msgChange, changeMsg{I: 1, R: recWire{N: "a", V: 1, X: make([]byte, DefaultMaxValueSize+1)}})
	require.NoError(t, err)
	h.HandleMessage("x", big)
	bad, err := encodeMsg(msgChange, changeMsg{I: 1, R: recWire{N: "a//b", V: 1}})
	require.NoError(t, err)
	h.HandleMessage("x", bad)
	h.MergeRemoteState("x", []byte("junk"), false) // foreign: not our version byte
	for _, m := range sampleMessages(t) {          // well-formed, but from nobody we know
		h.HandleMessage("stranger", m)
	}
	// A local operation queues behind the messages: when it returns,
	// every message above has been handled.
	require.NoError(t, tr.Bind(ctx(t), "barrier", nil))
	s := tr.Stats()
	require.Equal(t, [3]uint64{4, 3, 1}, [3]uint64{s.Malformed, s.Foreign, s.Oversized}, "malformed, foreign, oversized")
	// The well-formed messages are applied (a cluster-scoped write may
	// come from any member); the stranger's node-scoped binding went with
	// its retire message, and its later confirmation was refused.
	_, err = tr.Lookup("cfg/db")
	require.NoError(t, err)
	_, err = tr.Lookup("ejb/Orders")
	require.ErrorIs(t, err, ErrNotFound)
}
