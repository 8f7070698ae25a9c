package replication

import (
	"math"

	"github.com/troupe-go/troupe/internal/wire"
)

// Hand-written msgpack for the messages of a Save (applyReq and reply),
// which go-msgpack's reflection made cost microseconds each way. They
// write exactly the bytes go-msgpack writes for these structs (arrays of
// their fields in order; an empty omitempty map or slice as nil), so
// nodes with and without them interoperate; codec_test.go checks that
// against go-msgpack. Their decoders accept only that form and otherwise
// leave the message to go-msgpack (see wire.FastDecoder): an older or
// newer sender's array of another length, for one, is decoded there.
//
// A field added to applyReq or reply must be added here too, at the end,
// and to applyFields or replyFields.

const (
	applyFields = 11
	replyFields = 3
)

var (
	_ wire.Appender    = (*applyReq)(nil)
	_ wire.FastDecoder = (*applyReq)(nil)
	_ wire.Appender    = reply{}
	_ wire.FastDecoder = (*reply)(nil)
)

// AppendWire appends r as go-msgpack encodes it.
func (r *applyReq) AppendWire(b []byte) []byte {
	b = wire.AppendArrayHeader(b, applyFields)
	b = wire.AppendString(b, r.From)
	b = wire.AppendUint(b, r.Inc)
	b = wire.AppendString(b, r.Key)
	b = wire.AppendUint(b, r.Epoch)
	b = wire.AppendInt(b, int64(r.Members))
	b = wire.AppendUint(b, r.Base)
	b = wire.AppendUint(b, r.Version)
	b = wire.AppendBool(b, r.Full)
	if len(r.Set) == 0 {
		b = wire.AppendNil(b)
	} else {
		b = wire.AppendMapHeader(b, len(r.Set))
		for k, v := range r.Set {
			b = wire.AppendString(b, k)
			b = wire.AppendBytes(b, v)
		}
	}
	b = appendStrings(b, r.Del)
	return appendStrings(b, r.Contested)
}

// appendStrings appends an omitempty []string.
func appendStrings(b []byte, s []string) []byte {
	if len(s) == 0 {
		return wire.AppendNil(b)
	}
	b = wire.AppendArrayHeader(b, len(s))
	for _, v := range s {
		b = wire.AppendString(b, v)
	}
	return b
}

// DecodeWire decodes what AppendWire writes into r.
func (r *applyReq) DecodeWire(b []byte) bool {
	d := wire.NewReader(b)
	if d.ArrayLen() != applyFields {
		return false
	}
	var v applyReq
	v.From = d.String()
	v.Inc = d.Uint(math.MaxUint64)
	v.Key = d.String()
	v.Epoch = d.Uint(math.MaxUint64)
	v.Members = int(d.Int())
	v.Base = d.Uint(math.MaxUint64)
	v.Version = d.Uint(math.MaxUint64)
	v.Full = d.Bool()
	if !d.Nil() {
		n := d.MapLen()
		if !d.OK() {
			return false
		}
		v.Set = make(map[string][]byte, n)
		for range n {
			k := d.String()
			if _, dup := v.Set[k]; dup {
				return false // never written by AppendWire; go-msgpack decides what a repeated key means
			}
			v.Set[k] = d.Bytes()
		}
	}
	v.Del = readStrings(&d)
	v.Contested = readStrings(&d)
	if !d.Done() {
		return false
	}
	*r = v
	return true
}

// readStrings reads an omitempty []string.
func readStrings(d *wire.Reader) []string {
	if d.Nil() {
		return nil
	}
	n := d.ArrayLen()
	if !d.OK() {
		return nil
	}
	s := make([]string, n)
	for i := range s {
		s[i] = d.String()
	}
	return s
}

// AppendWire appends r as go-msgpack encodes it.
func (r reply) AppendWire(b []byte) []byte {
	b = wire.AppendArrayHeader(b, replyFields)
	b = wire.AppendUint(b, uint64(r.St))
	b = wire.AppendUint(b, r.G)
	return wire.AppendInt(b, int64(r.N))
}

// DecodeWire decodes what AppendWire writes into r.
func (r *reply) DecodeWire(b []byte) bool {
	d := wire.NewReader(b)
	if d.ArrayLen() != replyFields {
		return false
	}
	var v reply
	v.St = status(d.Uint(math.MaxUint8))
	v.G = d.Uint(math.MaxUint64)
	v.N = int(d.Int())
	if !d.Done() {
		return false
	}
	*r = v
	return true
}
