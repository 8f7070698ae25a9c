// Package wire is Troupe's one msgpack codec: every layer that puts a
// struct on the network encodes it here, so that all of them share the
// same handle settings and the same defensive limits on what a decoder may
// allocate.
package wire

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

var handle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true
	// Decoding into interface{} must not produce map[interface{}]... that
	// callers cannot use; and a decoder never trusts a length prefix for
	// more than it has bytes for (go-msgpack checks lengths against the
	// input before allocating).
	h.RawToString = true
	return h
}()

var encPool = sync.Pool{New: func() any { return codec.NewEncoderBytes(nil, handle) }}

// Marshal encodes v as msgpack.
func Marshal(v any) ([]byte, error) {
	var out []byte
	enc := encPool.Get().(*codec.Encoder)
	enc.ResetBytes(&out)
	err := enc.Encode(v)
	encPool.Put(enc)
	if err != nil {
		return nil, fmt.Errorf("wire: encode %T: %w", v, err)
	}
	return out, nil
}

// Unmarshal decodes msgpack from b into v, which must be a pointer. Errors
// (never panics) on malformed input.
func Unmarshal(b []byte, v any) (err error) {
	dec := codec.NewDecoder(bytes.NewReader(b), handle)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("wire: decode %T: %w", v, err)
	}
	return nil
}
