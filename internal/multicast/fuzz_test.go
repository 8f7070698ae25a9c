package multicast

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeAnnouncement feeds arbitrary datagrams to the decoder and to
// the whole receive policy. Nothing may panic, and whatever decodes must
// survive a round trip through the encoder. The seed corpus is in
// testdata/fuzz/FuzzDecodeAnnouncement; more seeds come from f.Add.
func FuzzDecodeAnnouncement(f *testing.F) {
	h := newHandle()
	for _, key := range [][]byte{nil, key1} {
		b, err := encodeAnnouncement(h, testAnnouncement(), key)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{wireVersion, kindAnnounce, 0xff, 0xff})

	r := testReceiver(f, nil)
	r.keys = func() [][]byte { return [][]byte{key2, key1} }
	from := netip.MustParseAddr("127.0.0.2")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = r.handle(b, from, time.Unix(1_700_000_000, 0))

		p, err := decodeAnnouncement(h, b)
		if err != nil {
			return
		}
		require.LessOrEqual(t, len(b), MaxDatagram)
		verify(p, [][]byte{key1})
		again, err := encodeAnnouncement(h, p.ann, nil)
		require.NoError(t, err, "a decoded announcement must encode")
		q, err := decodeAnnouncement(h, again)
		require.NoError(t, err)
		require.Equal(t, p.ann, q.ann)
	})
}
