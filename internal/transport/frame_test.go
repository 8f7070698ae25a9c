package transport

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"io"
	"os"
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

// stutter is an io.Reader that gives at most one byte per read and a
// timeout after every byte, as a connection does whose reader's context
// keeps ending. It is a fake: the test is about the frame reader's
// bookkeeping, not the network.
type stutter struct {
	data    []byte
	timeout bool
}

func (s *stutter) Read(p []byte) (int, error) {
	if s.timeout = !s.timeout; s.timeout {
		return 0, os.ErrDeadlineExceeded
	}
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:1], s.data)
	s.data = s.data[n:]
	return n, nil
}

// TestFrameReadResumesAfterTimeout: a read that times out mid-frame keeps
// what it read, and the next read completes the frame; no byte is lost or
// read twice, sealed frames included.
func TestFrameReadResumesAfterTimeout(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		wire, open := wireOf(t, sampleFrames, sealed)
		// bufio with its smallest buffer, so that the stutter reaches it.
		r := frameReader{r: bufio.NewReaderSize(&stutter{data: wire}, 16), max: minFrameSize, open: open}
		timeouts := 0
		for _, want := range sampleFrames {
			var got frame
			for {
				var err error
				got, _, err = r.read()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					timeouts++
					continue
				}
				require.NoError(t, err)
				break
			}
			require.Equal(t, want.kind, got.kind)
			require.Equal(t, want.id, got.id)
			require.Equal(t, want.method, got.method)
			require.Equal(t, string(want.body), string(got.body))
		}
		require.Greater(t, timeouts, len(sampleFrames), "the reads were interrupted mid-frame")
		_, _, err := readPastTimeouts(&r)
		require.ErrorIs(t, err, io.EOF)
	}
}

func readPastTimeouts(r *frameReader) (frame, int, error) {
	for {
		f, n, err := r.read()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return f, n, err
		}
	}
}

// testAEAD is AES-GCM under a fixed key: the same key on both sides.
// wireOf returns frames as they travel, sealed with a test key when
// sealed is true, and the AEAD that opens them (nil when not sealed).
func wireOf(t *testing.T, frames []frame, sealed bool) (wire []byte, open cipher.AEAD) {
	var seal cipher.AEAD
	if sealed {
		seal, open = testAEAD(t), testAEAD(t)
	}
	for i, f := range frames {
		b := encodeFrame(f)
		if sealed {
			binary.BigEndian.PutUint32(b, uint32(len(b)-lengthSize+seal.Overhead()))
			var iv [12]byte
			b = append(b[:lengthSize], seal.Seal(nil, putNonce(&iv, uint64(i)), b[lengthSize:], b[:lengthSize])...)
		}
		wire = append(wire, b...)
	}
	return wire, open
}

func testAEAD(t *testing.T) cipher.AEAD {
	block, err := aes.NewCipher(key(7))
	require.NoError(t, err)
	aead, err := cipher.NewGCM(block)
	require.NoError(t, err)
	return aead
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
