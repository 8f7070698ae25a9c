package transport

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

var sampleFrames = []frame{
	{kind: kindRequest, id: 1, method: "session.save", body: []byte("body")},
	{kind: kindRequest, id: 2, method: "", body: nil},
	{kind: kindSend, id: 3, method: "session.touch", body: []byte{0}},
	{kind: kindResponse, id: 1, body: []byte("answer")},
	{kind: kindError, id: 2, body: []byte("no such session")},
	{kind: kindPing},
	{kind: kindPong, id: 1<<64 - 1},
}

func TestFrameRoundTrip(t *testing.T) {
	var wire []byte
	for _, f := range sampleFrames {
		wire = append(wire, encodeFrame(f)...)
	}
	r := frameReader{r: bufio.NewReader(bytes.NewReader(wire)), max: minFrameSize}
	for _, want := range sampleFrames {
		got, n, err := r.read()
		require.NoError(t, err)
		require.Equal(t, len(encodeFrame(want)), n)
		require.Equal(t, want.kind, got.kind)
		require.Equal(t, want.id, got.id)
		require.Equal(t, want.method, got.method)
		require.Equal(t, len(want.body), len(got.body))
		require.Equal(t, lengthSize+frameSize(want), n)
	}
	_, _, err := r.read()
	require.ErrorIs(t, err, io.EOF, "a clean end between frames is not an error of the frame")
}

// FuzzReadFrame feeds arbitrary bytes to the frame decoder. It must never
// panic, must reject frames over the limit, and whatever it accepts must
// re-encode to exactly the bytes it consumed.
func FuzzReadFrame(f *testing.F) {
	for _, fr := range sampleFrames {
		f.Add(encodeFrame(fr))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := frameReader{r: bufio.NewReader(bytes.NewReader(data)), max: minFrameSize}
		consumed := 0
		for {
			fr, n, err := r.read()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, errMalformed) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			if n > lengthSize+minFrameSize {
				t.Fatalf("accepted a frame of %d bytes over a limit of %d", n, minFrameSize)
			}
			if enc := encodeFrame(fr); !bytes.Equal(enc, data[consumed:consumed+n]) {
				t.Fatalf("decoded %+v from %x, which encodes as %x", fr, data[consumed:consumed+n], enc)
			}
			consumed += n
		}
	})
}
