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
