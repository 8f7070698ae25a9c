package wire

import (
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/stretchr/testify/require"
)

type sample struct {
	A string
	B []byte
	C map[string]string
	D uint64
}

func TestRoundTrip(t *testing.T) {
	in := sample{A: "x", B: []byte{1, 2}, C: map[string]string{"k": "v"}, D: 1 << 40}
	b, err := Marshal(in)
	require.NoError(t, err)
	var out sample
	require.NoError(t, Unmarshal(b, &out))
	require.Equal(t, in, out)
}

func TestAppend(t *testing.T) {
	in := sample{A: "x", D: 7}
	want, err := Marshal(in)
	require.NoError(t, err)
	for _, b := range [][]byte{nil, []byte("ab"), append(make([]byte, 0, 64), "ab"...)} {
		prefix := string(b)
		out, err := Append(b, in)
		require.NoError(t, err)
		require.Equal(t, prefix, string(out[:len(prefix)]))
		require.Equal(t, want, out[len(prefix):])
	}
}

func TestUnmarshalCopies(t *testing.T) {
	b, err := Marshal(sample{A: "abc", B: []byte{1, 2, 3}})
	require.NoError(t, err)
	var out sample
	require.NoError(t, Unmarshal(b, &out))
	clear(b)
	require.Equal(t, "abc", out.A)
	require.Equal(t, []byte{1, 2, 3}, out.B)
}

func TestDecoderReusedAfterError(t *testing.T) {
	good, err := Marshal(sample{A: "ok"})
	require.NoError(t, err)
	for range 3 {
		var out sample
		require.Error(t, Unmarshal(good[:len(good)-1], &out))
		out = sample{}
		require.NoError(t, Unmarshal(good, &out))
		require.Equal(t, "ok", out.A)
	}
}

func TestMalformedIsAnError(t *testing.T) {
	var out sample
	for _, b := range [][]byte{nil, {0xff}, {0x85, 0xa1}, {0xdb, 0xff, 0xff, 0xff, 0xff}} {
		require.Error(t, Unmarshal(b, &out))
	}
}

func FuzzUnmarshal(f *testing.F) {
	b, _ := Marshal(sample{A: "seed", C: map[string]string{"a": "b"}})
	f.Add(b)
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var out sample
		_ = Unmarshal(b, &out)
	})
}

func BenchmarkUnmarshal(b *testing.B) {
	msg, err := Marshal(sample{A: "attribute", B: make([]byte, 128), D: 42})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var out sample
		if err := Unmarshal(msg, &out); err != nil {
			b.Fatal(err)
		}
	}
}

// fastSample encodes itself as sample does and decodes only what has
// A == "fast", leaving the rest to go-msgpack.
type fastSample struct {
	A string
	B []byte
	C map[string]string
	D uint64
}

func (s fastSample) AppendWire(b []byte) []byte {
	b = AppendMapHeader(b, 4)
	b = AppendString(AppendString(b, "A"), s.A)
	b = AppendBytes(AppendString(b, "B"), s.B)
	b = AppendString(b, "C")
	if s.C == nil {
		b = AppendNil(b)
	} else {
		b = AppendMapHeader(b, len(s.C))
		for k, v := range s.C {
			b = AppendString(AppendString(b, k), v)
		}
	}
	return AppendUint(AppendString(b, "D"), s.D)
}

func (s *fastSample) DecodeWire(b []byte) bool {
	r := NewReader(b)
	if r.MapLen() != 4 || r.String() != "A" || r.String() != "fast" || !r.OK() {
		return false
	}
	*s = fastSample{A: "fast", D: 1}
	return true
}

func TestHandWrittenCodecs(t *testing.T) {
	in := sample{A: "x", B: []byte{1}, D: 1 << 40}
	want, err := Marshal(in)
	require.NoError(t, err)
	got, err := Marshal(fastSample(in))
	require.NoError(t, err)
	require.Equal(t, want, got)

	var out fastSample
	require.NoError(t, Unmarshal(got, &out), "declined: decoded by go-msgpack")
	require.Equal(t, fastSample(in), out)

	b, err := Marshal(fastSample{A: "fast"})
	require.NoError(t, err)
	out = fastSample{}
	require.NoError(t, Unmarshal(b, &out))
	require.Equal(t, fastSample{A: "fast", D: 1}, out, "accepted: decoded by DecodeWire")

	out = fastSample{}
	require.Error(t, Unmarshal(b[:3], &out))
}

func TestReaderLimits(t *testing.T) {
	for _, b := range [][]byte{
		{0xdd, 0xff, 0xff, 0xff, 0xff},       // array longer than the input
		{0xdf, 0x00, 0x00, 0x00, 0x02, 0x01}, // map longer than the input
		{0xdb, 0xff, 0xff, 0xff, 0xff},       // string longer than the input
		{0xc6, 0x00, 0x00, 0x00, 0x02, 0x01}, // binary longer than the input
		{0xcf, 0x01},                         // truncated integer
	} {
		r := NewReader(b)
		switch b[0] {
		case 0xdd:
			r.ArrayLen()
		case 0xdf:
			r.MapLen()
		case 0xdb:
			_ = r.String()
		case 0xc6:
			r.Bytes()
		default:
			r.Uint(^uint64(0))
		}
		require.False(t, r.OK(), "% x", b)
		require.False(t, r.Done())
	}
}

func TestReaderArrayLenOf(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		size int
		n    int
		ok   bool
	}{
		{[]byte{0x90}, 12, 0, true},
		{[]byte{0x92, 1, 2, 3, 4}, 2, 2, true},
		{[]byte{0x92, 1, 2, 3}, 2, 0, false},                // two elements of two bytes need four
		{[]byte{0xdc, 0x00, 0x02, 1, 2, 3, 4}, 2, 2, true},  // array 16
		{[]byte{0xdc, 0x00, 0x03, 1, 2, 3, 4}, 2, 0, false}, // array 16, too short
		{[]byte{0xdd, 0x00, 0x00, 0x00, 0x01, 1}, 1, 1, true},
		{[]byte{0xdd, 0x00, 0x10, 0x00, 0x00, 1}, 12, 0, false},
		{[]byte{0xc0}, 1, 0, false}, // not an array
		{nil, 1, 0, false},
	} {
		r := NewReader(c.b)
		require.Equal(t, c.n, r.ArrayLenOf(c.size), "% x", c.b)
		require.Equal(t, c.ok, r.OK(), "% x", c.b)
		if !c.ok {
			require.Zero(t, r.ArrayLen(), "a failure sticks")
		}
	}
}

// reflective encodes v with go-msgpack, as Append does for a value
// without a fast path.
func reflective(t *testing.T, v any) []byte {
	var out []byte
	require.NoError(t, codec.NewEncoderBytes(&out, handle).Encode(v))
	return out
}

// TestScalarsAsGoMsgpack checks the scalar fast paths against go-msgpack:
// the same bytes out, the same values back, and anything they decline
// (other kinds, values that do not fit, trailing bytes) still decoded or
// refused by go-msgpack.
func TestScalarsAsGoMsgpack(t *testing.T) {
	ints := []int64{0, 1, 31, 127, 128, 255, 256, 32767, 32768, 65535, 65536, 1<<31 - 1, 1 << 31, 1<<32 - 1, 1 << 32, math.MaxInt64,
		-1, -32, -33, -128, -129, -32768, -32769, -1 << 31, -1<<31 - 1, math.MinInt64}
	for _, i := range ints {
		for _, v := range []any{i, int(i), int32(i), int16(i), int8(i), uint64(i), uint(i), uint32(i), uint16(i), uint8(i)} {
			got, err := Marshal(v)
			require.NoError(t, err)
			require.Equal(t, reflective(t, v), got, "%T %v", v, v)
		}
		b, err := Marshal(i)
		require.NoError(t, err)
		var (
			x64 int64
			x   int
		)
		require.NoError(t, Unmarshal(b, &x64))
		require.NoError(t, Unmarshal(b, &x))
		require.Equal(t, i, x64)
		require.Equal(t, int(i), x)
		var u, ru uint64
		uerr := Unmarshal(b, &u)
		rerr := codec.NewDecoderBytes(b, handle).Decode(&ru)
		require.Equal(t, rerr == nil, uerr == nil, "uint64 from %d: %v / %v", i, uerr, rerr)
		require.Equal(t, ru, u, "uint64 from %d", i)
	}
	big, err := Marshal(uint64(math.MaxUint64))
	require.NoError(t, err)
	var u uint64
	require.NoError(t, Unmarshal(big, &u))
	require.Equal(t, uint64(math.MaxUint64), u)
	var i64, want64 int64
	err = Unmarshal(big, &i64)
	werr := codec.NewDecoderBytes(big, handle).Decode(&want64)
	require.Equal(t, werr == nil, err == nil, "does not fit an int64: as go-msgpack decides")
	require.Equal(t, want64, i64)

	for _, s := range []string{"", "a", strings.Repeat("x", 31), strings.Repeat("x", 32), strings.Repeat("x", 255), strings.Repeat("x", 256), strings.Repeat("x", 70000)} {
		b, err := Marshal(s)
		require.NoError(t, err)
		require.Equal(t, reflective(t, s), b, "string of %d", len(s))
		var out string
		require.NoError(t, Unmarshal(b, &out))
		require.Equal(t, s, out)
	}
	for _, v := range []bool{false, true} {
		b, err := Marshal(v)
		require.NoError(t, err)
		require.Equal(t, reflective(t, v), b)
		var out bool
		require.NoError(t, Unmarshal(b, &out))
		require.Equal(t, v, out)
	}

	// Declined by the fast path, decided by go-msgpack.
	f, err := Marshal(2.5)
	require.NoError(t, err)
	var fromFloat, want int64
	ferr := Unmarshal(f, &fromFloat)
	werr = codec.NewDecoderBytes(f, handle).Decode(&want)
	require.Equal(t, werr == nil, ferr == nil)
	require.Equal(t, want, fromFloat)
	var fromNil int64 = 7
	require.NoError(t, Unmarshal([]byte{0xc0}, &fromNil), "nil, as go-msgpack decodes it")
	require.Error(t, Unmarshal([]byte{0xcd, 0x01}, &i64), "truncated")
	var str string
	require.NoError(t, Unmarshal(append(reflective(t, "ab"), 0x01), &str), "trailing bytes: go-msgpack reads the first value")
	require.Equal(t, "ab", str)
}

// BenchmarkScalar: an int64 attribute's round trip (replication.SetValue
// and GetValue).
func BenchmarkScalar(b *testing.B) {
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p, err := Marshal(int64(i))
		if err != nil {
			b.Fatal(err)
		}
		var v int64
		if err := Unmarshal(p, &v); err != nil || v != int64(i) {
			b.Fatal(v, err)
		}
	}
}
