// Package wire is the msgpack codec of Troupe's messages: membership
// (its messages, state exchange and member metadata), naming and
// replication encode the structs they put on the network here, so that
// they share the same handle settings and the same defensive limits on
// what a decoder may allocate.
//
// Two packages keep formats of their own. internal/transport's frame
// headers and handshake are fixed binary, and it never decodes the bodies
// it carries (its callers encode them). internal/multicast frames its own
// datagrams and encodes their small msgpack body with a handle of its own.
//
// Types on a hot path may encode and decode themselves (Appender,
// FastDecoder) in the very bytes go-msgpack would write.
//
// Encoders and decoders are pooled: a codec.Encoder or Decoder is large,
// and building one per message cost more than encoding a small message.
package wire

import (
	"fmt"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// Encoder and Decoder are go-msgpack's, for a type that encodes itself on
// the reflective path (go-msgpack's Selfer: CodecEncodeSelf and
// CodecDecodeSelf), as a type with a wire form of its own must when it is
// a field of a struct that go-msgpack may encode or decode.
type (
	Encoder = codec.Encoder
	Decoder = codec.Decoder
)

var handle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true
	// Decoding into interface{} must not produce map[interface{}]... that
	// callers cannot use.
	h.RawToString = true
	// A collection's length prefix is a claim, not a fact: make at most
	// this much room up front and grow as elements actually arrive, so
	// that a few bytes claiming a huge map allocate little (found by
	// FuzzDecodeMeta: 13 bytes allocated about 390 KiB).
	h.MaxInitLen = maxInitLen
	return h
}()

// maxInitLen bounds how many elements a decoder makes room for in a
// collection before they arrive; beyond it the collection grows as
// elements are decoded.
const maxInitLen = 256

// maxPooled bounds the scratch buffers kept for reuse, so that one large
// message does not pin its memory.
const maxPooled = 64 << 10

var (
	encPool = sync.Pool{New: func() any { return codec.NewEncoderBytes(nil, handle) }}
	decPool = sync.Pool{New: func() any { return codec.NewDecoderBytes(nil, handle) }}
	bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<10); return &b }}
)

// Marshal encodes v as msgpack into a new slice of exactly its size.
func Marshal(v any) ([]byte, error) {
	bp := bufPool.Get().(*[]byte)
	b, err := Append((*bp)[:0], v)
	out := append([]byte(nil), b...)
	if cap(b) <= maxPooled {
		*bp = b
		bufPool.Put(bp)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Append appends the msgpack encoding of v to b and returns the extended
// slice, which reuses b's spare capacity when it is large enough.
func Append(b []byte, v any) ([]byte, error) {
	if a, ok := v.(Appender); ok {
		return a.AppendWire(b), nil
	}
	if out, ok := appendScalar(b, v); ok {
		return out, nil
	}
	// The encoder writes from the start of the slice it is given: give it
	// b's spare capacity, so that when v fits, out already sits in place
	// after b and the append below copies it onto itself.
	out := b[len(b):len(b):cap(b)]
	if out == nil {
		out = []byte{}
	}
	enc := encPool.Get().(*codec.Encoder)
	enc.ResetBytes(&out)
	err := enc.Encode(v)
	encPool.Put(enc)
	if err != nil {
		return b, fmt.Errorf("wire: encode %T: %w", v, err)
	}
	return append(b, out...), nil
}

// Unmarshal decodes msgpack from b into v, which must be a pointer. Errors
// (never panics) on malformed input. v does not alias b: decoded byte
// slices and strings are copies.
func Unmarshal(b []byte, v any) error {
	if d, ok := v.(FastDecoder); ok && d.DecodeWire(b) {
		return nil
	}
	if decodeScalar(b, v) {
		return nil
	}
	if b == nil {
		b = []byte{} // ResetBytes ignores nil
	}
	dec := decPool.Get().(*codec.Decoder)
	dec.ResetBytes(b)
	err := dec.Decode(v)
	// Drop the reference to b, so that a pooled decoder does not pin it.
	dec.ResetBytes([]byte{})
	decPool.Put(dec)
	if err != nil {
		return fmt.Errorf("wire: decode %T: %w", v, err)
	}
	return nil
}
