package wire

import (
	"testing"

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
