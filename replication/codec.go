package replication

import (
	"math"

	"github.com/troupe-go/troupe/internal/wire"
)

// Hand-written msgpack for the messages of a Save (applyReq and reply)
// and of a batch of changes (batchReq, whose items are applyReqs, and
// batchReply), which go-msgpack's reflection made cost microseconds each
// way. They write exactly the bytes go-msgpack writes for these structs
// (arrays of their fields in order; an empty omitempty map or slice as
// nil; a nil slice that is not omitempty as nil and an empty one as an
// empty array; a []status as an array of integers, not as binary, since
// go-msgpack writes binary only for slices of the type uint8 itself), so
// nodes with and without them interoperate; codec_test.go checks that
// against go-msgpack. Their decoders accept only that form and otherwise
// leave the message to go-msgpack (see wire.FastDecoder): an older or
// newer sender's array of another length, for one, is decoded there, and
// so is a batch any of whose items is.
//
// A field added to applyReq, reply, batchReq or batchReply must be added
// here too, at the end, and to applyFields, replyFields, batchFields or
// batchReplyFields.

const (
	applyFields      = 11
	replyFields      = 3
	batchFields      = 2
	batchReplyFields = 3

	// minApplySize is the fewest bytes an applyReq takes: its array
	// header and a byte for each field.
	minApplySize = 1 + applyFields
)

var (
	_ wire.Appender    = (*applyReq)(nil)
	_ wire.FastDecoder = (*applyReq)(nil)
	_ wire.Appender    = reply{}
	_ wire.FastDecoder = (*reply)(nil)
	_ wire.Appender    = batchReq{}
	_ wire.FastDecoder = (*batchReq)(nil)
	_ wire.Appender    = batchReply{}
	_ wire.FastDecoder = (*batchReply)(nil)
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
		for _, a := range r.Set {
			b = wire.AppendString(b, a.k)
			b = wire.AppendBytes(b, a.v)
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
	v, ok := decodeApply(&d)
	if !ok || !d.Done() {
		return false
	}
	*r = v
	return true
}

// decodeApply reads an applyReq as AppendWire writes it, for
// applyReq.DecodeWire and for the items of a batch. It reports false if
// what comes next is not in that form.
func decodeApply(d *wire.Reader) (applyReq, bool) {
	var v applyReq
	if d.ArrayLen() != applyFields {
		return applyReq{}, false
	}
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
			return applyReq{}, false
		}
		v.Set = make(attrs, 0, min(n, maxInitAttrs))
		sorted := true
		for i := range n {
			k := d.String()
			if i > 0 && k <= v.Set[i-1].k {
				sorted = false
			}
			v.Set = append(v.Set, attr{k, d.Bytes()})
		}
		// AppendWire writes names in order; an older sender did not. A
		// repeated name is never written by AppendWire: go-msgpack
		// decides what it means.
		if !sorted && !v.Set.sort() {
			return applyReq{}, false
		}
	}
	v.Del = readStrings(d)
	v.Contested = readStrings(d)
	if !d.OK() {
		return applyReq{}, false
	}
	return v, true
}

// maxInitAttrs bounds the room made for a change set before its
// attributes arrive: its length is the sender's claim.
const maxInitAttrs = 64

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

// AppendWire appends r as go-msgpack encodes it. Its items are written
// whole, From and all: a sender leaves their From empty, the batch's
// From standing for it.
func (r batchReq) AppendWire(b []byte) []byte {
	b = wire.AppendArrayHeader(b, batchFields)
	b = wire.AppendString(b, r.From)
	if r.Items == nil {
		return wire.AppendNil(b)
	}
	b = wire.AppendArrayHeader(b, len(r.Items))
	for i := range r.Items {
		b = r.Items[i].AppendWire(b)
	}
	return b
}

// DecodeWire decodes what AppendWire writes into r. It declines the whole
// batch if any item is in another form.
func (r *batchReq) DecodeWire(b []byte) bool {
	d := wire.NewReader(b)
	if d.ArrayLen() != batchFields {
		return false
	}
	var v batchReq
	v.From = d.String()
	if !d.Nil() {
		n := d.ArrayLenOf(minApplySize)
		if !d.OK() {
			return false
		}
		v.Items = make([]applyReq, n)
		for i := range v.Items {
			var ok bool
			if v.Items[i], ok = decodeApply(&d); !ok {
				return false
			}
		}
	}
	if !d.Done() {
		return false
	}
	*r = v
	return true
}

// AppendWire appends r as go-msgpack encodes it: St as an array of
// integers (go-msgpack writes binary only for []uint8 itself, not for a
// slice of another type of bytes), and a nil slice as nil.
func (r batchReply) AppendWire(b []byte) []byte {
	b = wire.AppendArrayHeader(b, batchReplyFields)
	if r.St == nil {
		b = wire.AppendNil(b)
	} else {
		b = wire.AppendArrayHeader(b, len(r.St))
		for _, st := range r.St {
			b = wire.AppendUint(b, uint64(st))
		}
	}
	if r.G == nil {
		b = wire.AppendNil(b)
	} else {
		b = wire.AppendArrayHeader(b, len(r.G))
		for _, g := range r.G {
			b = wire.AppendUint(b, g)
		}
	}
	return wire.AppendInt(b, int64(r.N))
}

// DecodeWire decodes what AppendWire writes into r. A St written as
// binary or as a string, which go-msgpack also reads, is left to it.
func (r *batchReply) DecodeWire(b []byte) bool {
	d := wire.NewReader(b)
	if d.ArrayLen() != batchReplyFields {
		return false
	}
	var v batchReply
	if !d.Nil() {
		n := d.ArrayLen()
		if !d.OK() {
			return false
		}
		v.St = make([]status, n)
		for i := range v.St {
			v.St[i] = status(d.Uint(math.MaxUint8))
		}
	}
	if !d.Nil() {
		n := d.ArrayLen()
		if !d.OK() {
			return false
		}
		v.G = make([]uint64, n)
		for i := range v.G {
			v.G[i] = d.Uint(math.MaxUint64)
		}
	}
	v.N = int(d.Int())
	if !d.Done() {
		return false
	}
	*r = v
	return true
}
