package transport

import (
	"bufio"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A frame on the wire, integers big-endian:
//
//	length   uint32  bytes that follow this field
//	kind     uint8
//	id       uint64  chosen by the caller, echoed in the answer
//	payload          depends on kind:
//	                   request, send: method length (uint8), method, body
//	                   response:      body
//	                   error:         the handler's error message
//	                   ping, pong:    empty
//
// With a cluster key, everything after length is sealed with AES-GCM, the
// length covers the ciphertext and its tag, and the length itself is
// authenticated as additional data.
//
// The header is fixed binary rather than msgpack: it is decoded for every
// frame before anything else, and a fixed layout is bounds-checked in one
// comparison, decoded without allocation or reflection, and easy to fuzz.
// Bodies are opaque here; callers encode them with msgpack.

// Frame kinds. These values are on the wire: append new kinds at the end,
// never renumber or reuse one, and send a new kind only to peers whose
// protocol version knows it.
const (
	kindRequest  uint8 = 1 // answered by kindResponse or kindError
	kindResponse uint8 = 2
	kindError    uint8 = 3
	kindSend     uint8 = 4 // a request that gets no answer
	kindPing     uint8 = 5 // answered by kindPong; proves that the peer still reads
	kindPong     uint8 = 6
)

const (
	lengthSize   = 4
	headerSize   = 1 + 8 // kind, id
	maxMethodLen = 255
	gcmTagSize   = 16
)

// errMalformed marks a frame that breaks the format. It closes the
// connection that carried it and is counted in Stats.BadFrames.
var errMalformed = errors.New("transport: malformed frame")

type frame struct {
	kind   uint8
	id     uint64
	method string // request and send only
	body   []byte
}

// frameSize is the length field of f before sealing.
func frameSize(f frame) int {
	n := headerSize + len(f.body)
	if f.kind == kindRequest || f.kind == kindSend {
		n += 1 + len(f.method)
	}
	return n
}

// appendFrame appends f to b with a zero length field, which the writer
// fills in when it knows whether the frame is sealed.
func appendFrame(b []byte, f frame) []byte {
	b = append(b, 0, 0, 0, 0, f.kind)
	b = binary.BigEndian.AppendUint64(b, f.id)
	if f.kind == kindRequest || f.kind == kindSend {
		b = append(b, byte(len(f.method)))
		b = append(b, f.method...)
	}
	return append(b, f.body...)
}

// parseFrame decodes what follows the length field, after opening it.
// The body aliases p. last is the method of the previous request, reused
// when this one names the same, which spares an allocation per request.
func parseFrame(p []byte, last string) (frame, error) {
	if len(p) < headerSize {
		return frame{}, fmt.Errorf("%w: %d bytes, shorter than a header", errMalformed, len(p))
	}
	f := frame{kind: p[0], id: binary.BigEndian.Uint64(p[1:headerSize])}
	rest := p[headerSize:]
	switch f.kind {
	case kindRequest, kindSend:
		if len(rest) < 1 || len(rest)-1 < int(rest[0]) {
			return frame{}, fmt.Errorf("%w: method name runs past the frame", errMalformed)
		}
		n := int(rest[0])
		if m := rest[1 : 1+n]; string(m) == last {
			f.method = last
		} else {
			f.method = string(m)
		}
		f.body = rest[1+n:]
	case kindResponse, kindError:
		f.body = rest
	case kindPing, kindPong:
		if len(rest) != 0 {
			return frame{}, fmt.Errorf("%w: %d bytes of payload in a ping", errMalformed, len(rest))
		}
	default:
		return frame{}, fmt.Errorf("%w: unknown kind %d", errMalformed, f.kind)
	}
	return f, nil
}

// frameReader reads frames from one connection, one reader at a time. A
// read that fails with a timeout keeps what it had read, and the next
// read carries on from there: a caller reading its own answer may be
// interrupted by its context mid-frame, and the next reader finishes
// that frame.
type frameReader struct {
	r    *bufio.Reader
	max  int         // largest length field accepted, before sealing
	open cipher.AEAD // nil unless the connection uses a cluster key
	seq  uint64      // counter of the next sealed frame
	hdr  [lengthSize]byte
	iv   [12]byte // scratch nonce, kept here so that it does not escape per frame

	// The frame being read: hdrN bytes of its length field, then want
	// bytes of body (0 until the length is known), of which body holds
	// the len(body) read so far. body grows as bytes arrive (see grow).
	hdrN int
	want int
	body []byte

	method string // of the last request read; see parseFrame
}

// read returns the next frame and its size on the wire. A clean EOF
// between frames is io.EOF; anything wrong inside a frame wraps
// errMalformed or ErrFrameTooLarge. A timeout leaves the frame half read,
// for the next call.
func (r *frameReader) read() (frame, int, error) {
	for r.hdrN < lengthSize {
		n, err := r.r.Read(r.hdr[r.hdrN:])
		r.hdrN += n
		if r.hdrN == lengthSize {
			break
		}
		if err != nil {
			if r.hdrN > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return frame{}, 0, truncated(err)
		}
	}
	if r.want == 0 {
		n := int(binary.BigEndian.Uint32(r.hdr[:]))
		limit := r.max
		if r.open != nil {
			limit += r.open.Overhead()
		}
		// The length is the peer's claim: checked against the limit, and
		// the body's buffer grows only as its bytes arrive.
		if n > limit {
			return frame{}, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, limit)
		}
		if n == 0 {
			return frame{}, 0, fmt.Errorf("%w: empty frame", errMalformed)
		}
		r.want = n
		r.body = make([]byte, 0, min(n, firstBodyAlloc))
	}
	for len(r.body) < r.want {
		if len(r.body) == cap(r.body) {
			r.body = grow(r.body, r.want)
		}
		n, err := r.r.Read(r.body[len(r.body):cap(r.body)])
		r.body = r.body[:len(r.body)+n]
		if len(r.body) == r.want {
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return frame{}, 0, truncated(err)
		}
	}
	p, size := r.body, lengthSize+len(r.body)
	r.hdrN, r.want, r.body = 0, 0, nil
	if r.open != nil {
		var err error
		if p, err = r.open.Open(p[:0], putNonce(&r.iv, r.seq), p, r.hdr[:]); err != nil {
			return frame{}, 0, fmt.Errorf("%w: sealed frame failed authentication", errMalformed)
		}
		r.seq++
	}
	f, err := parseFrame(p, r.method)
	if f.method != "" {
		r.method = f.method
	}
	return f, size, err
}

// firstBodyAlloc is the most a frame's buffer holds before its bytes
// arrive. Frames up to this size get their whole buffer at once; a larger
// one grows by doubling as it arrives, so a peer that claims a large
// frame and sends nothing more makes the reader hold only this much, and
// one that sends it holds at most twice what it sent.
const firstBodyAlloc = 16 << 10

// grow returns b with more room, up to want bytes: twice its capacity or
// want, whichever is smaller.
func grow(b []byte, want int) []byte {
	nb := make([]byte, len(b), min(want, max(2*cap(b), firstBodyAlloc)))
	copy(nb, b)
	return nb
}

// truncated marks an end of stream inside a frame as malformed.
func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated: %w", errMalformed, err)
	}
	return err
}

// putNonce writes the AES-GCM nonce of the seq'th frame in one direction
// into b. Each direction has its own key, fresh for every connection, so a
// counter never repeats a nonce under one key.
func putNonce(b *[12]byte, seq uint64) []byte {
	binary.BigEndian.PutUint64(b[4:], seq)
	return b[:]
}
