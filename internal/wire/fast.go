package wire

import (
	"encoding/binary"
	"math"
)

// Hand-written codecs. A message on a hot path may encode and decode
// itself instead of going through go-msgpack's reflection, which costs
// microseconds per message. Its encoding must be byte for byte what
// go-msgpack produces with this package's handle, so that nodes of either
// kind understand each other; the helpers below write and read exactly
// the forms go-msgpack writes.
//
// Marshal and Append use a value's AppendWire; Unmarshal uses DecodeWire
// and, when that declines, decodes by reflection as for any other type.

// Appender is a value that encodes itself: AppendWire appends its msgpack
// encoding to b, as go-msgpack would encode it with this package's handle.
type Appender interface {
	AppendWire(b []byte) []byte
}

// FastDecoder is a value (a pointer) that decodes itself. DecodeWire
// decodes b if it is exactly in the form that AppendWire writes (give or
// take the size classes of integers and lengths) and reports whether it
// did; it then holds copies, never slices of b. If it returns false it
// must have left the value unchanged, and Unmarshal decodes b by
// reflection instead, whose result or error stands. So a hand-written
// decoder only has to be right for what it accepts.
type FastDecoder interface {
	DecodeWire(b []byte) bool
}

// appendScalar appends v without reflection if it is an int, int64,
// uint64, bool or string, the values an application most often keeps in
// a session attribute (replication.SetValue and GetValue; decodeScalar
// reads the same kinds): for an int64, encoding and decoding it this way
// takes 60 % less time and one allocation fewer than go-msgpack's
// reflective path (BenchmarkScalar). Other kinds go to go-msgpack.
func appendScalar(b []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case int:
		return AppendInt(b, int64(x)), true
	case int64:
		return AppendInt(b, x), true
	case uint64:
		return AppendUint(b, x), true
	case bool:
		return AppendBool(b, x), true
	case string:
		return AppendString(b, x), true
	}
	return b, false
}

// decodeScalar decodes b into v, a pointer to an int64, int, uint64,
// bool or string, if b is exactly one value of the matching msgpack kind
// that fits; otherwise it leaves v alone and reports false, and
// Unmarshal decodes by reflection, whose result or error stands.
func decodeScalar(b []byte, v any) bool {
	r := NewReader(b)
	switch p := v.(type) {
	case *int64:
		return store(&r, p, r.Int())
	case *int:
		x := r.Int()
		return int64(int(x)) == x && store(&r, p, int(x))
	case *uint64:
		return store(&r, p, r.Uint(math.MaxUint64))
	case *bool:
		return store(&r, p, r.Bool())
	case *string:
		return store(&r, p, string(r.str()))
	}
	return false
}

// store sets *p to x, just read from r, if r read it whole and cleanly.
func store[T any](r *Reader, p *T, x T) bool {
	if !r.Done() {
		return false
	}
	*p = x
	return true
}

// AppendArrayHeader appends the header of an array of n elements.
func AppendArrayHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
}

// AppendMapHeader appends the header of a map of n entries.
func AppendMapHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
}

// AppendNil appends nil, which is also how go-msgpack writes an empty
// omitempty field of a struct encoded as an array.
func AppendNil(b []byte) []byte { return append(b, 0xc0) }

// AppendBool appends v.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// AppendUint appends v in its shortest unsigned form.
func AppendUint(b []byte, v uint64) []byte {
	switch {
	case v <= math.MaxInt8:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

// AppendInt appends v in its shortest signed form, as go-msgpack does for
// signed types (0 to 127 and -32 to -1 in one byte).
func AppendInt(b []byte, v int64) []byte {
	switch {
	case v > math.MaxInt8:
		switch {
		case v <= math.MaxInt16:
			return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
		case v <= math.MaxInt32:
			return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
		}
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

// AppendString appends s as a msgpack string.
func AppendString(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// AppendBytes appends p as msgpack binary, or nil if p is nil.
func AppendBytes(b []byte, p []byte) []byte {
	n := len(p)
	switch {
	case p == nil:
		return AppendNil(b)
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, p...)
}

// Reader reads the msgpack forms that the Append functions write, for a
// FastDecoder. Its first failure sticks: every later read returns a zero
// value, and OK reports false. It never allocates more than the input
// could hold: each length is checked against the bytes left.
type Reader struct {
	b   []byte
	bad bool
}

// NewReader returns a Reader of b.
func NewReader(b []byte) Reader { return Reader{b: b} }

// OK reports whether every read so far succeeded.
func (r *Reader) OK() bool { return !r.bad }

// Done reports whether every read so far succeeded and the input is used
// up.
func (r *Reader) Done() bool { return !r.bad && len(r.b) == 0 }

func (r *Reader) fail() { r.bad, r.b = true, nil }

// take consumes n bytes.
func (r *Reader) take(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.fail()
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *Reader) peek() (byte, bool) {
	if r.bad || len(r.b) == 0 {
		r.fail()
		return 0, false
	}
	return r.b[0], true
}

// length reads a big-endian length of size bytes (1, 2 or 4) and checks
// that at least n*unit bytes follow.
func (r *Reader) length(size, unit int) int {
	p := r.take(size)
	var n int
	switch size {
	case 1:
		if p != nil {
			n = int(p[0])
		}
	case 2:
		if p != nil {
			n = int(binary.BigEndian.Uint16(p))
		}
	default:
		if p != nil {
			n = int(binary.BigEndian.Uint32(p))
		}
	}
	if r.bad || n > len(r.b)/unit {
		r.fail()
		return 0
	}
	return n
}

// Nil consumes a nil and reports true if one comes next.
func (r *Reader) Nil() bool {
	if c, ok := r.peek(); ok && c == 0xc0 {
		r.b = r.b[1:]
		return true
	}
	return false
}

// ArrayLen reads an array header.
func (r *Reader) ArrayLen() int { return r.header(0x90, 0xdc, 0xdd, 1) }

// ArrayLenOf reads the header of an array whose elements each take at
// least size bytes, and fails if fewer bytes than that are left: a
// decoder may then allocate its elements up front without the input's
// length prefix making it allocate far more than the input holds.
func (r *Reader) ArrayLenOf(size int) int {
	n := r.ArrayLen()
	if n > len(r.b)/size {
		r.fail()
		return 0
	}
	return n
}

// MapLen reads a map header.
func (r *Reader) MapLen() int { return r.header(0x80, 0xde, 0xdf, 2) }

// header reads the header of an array or a map: fix is its fixed form's
// high nibble, code16 and code32 the codes of its longer forms, and unit
// the fewest bytes an element takes (a map entry, two), so that a count
// the input cannot hold fails.
func (r *Reader) header(fix, code16, code32 byte, unit int) int {
	c, ok := r.peek()
	if !ok {
		return 0
	}
	r.b = r.b[1:]
	switch {
	case c&0xf0 == fix:
		if n := int(c & 0x0f); n <= len(r.b)/unit {
			return n
		}
	case c == code16:
		return r.length(2, unit)
	case c == code32:
		return r.length(4, unit)
	}
	r.fail()
	return 0
}

// Bool reads a bool.
func (r *Reader) Bool() bool {
	c, ok := r.peek()
	if ok && (c == 0xc2 || c == 0xc3) {
		r.b = r.b[1:]
		return c == 0xc3
	}
	r.fail()
	return false
}

// integer reads any msgpack integer. neg reports a negative value, which
// v then holds as an int64.
func (r *Reader) integer() (v uint64, neg bool) {
	c, ok := r.peek()
	if !ok {
		return 0, false
	}
	r.b = r.b[1:]
	switch {
	case c <= 0x7f:
		return uint64(c), false
	case c >= 0xe0:
		return uint64(int64(int8(c))), true
	}
	var p []byte
	switch c {
	case 0xcc, 0xd0:
		p = r.take(1)
	case 0xcd, 0xd1:
		p = r.take(2)
	case 0xce, 0xd2:
		p = r.take(4)
	case 0xcf, 0xd3:
		p = r.take(8)
	default:
		r.fail()
	}
	if p == nil {
		return 0, false
	}
	switch c {
	case 0xcc:
		return uint64(p[0]), false
	case 0xcd:
		return uint64(binary.BigEndian.Uint16(p)), false
	case 0xce:
		return uint64(binary.BigEndian.Uint32(p)), false
	case 0xcf:
		return binary.BigEndian.Uint64(p), false
	case 0xd0:
		v := int64(int8(p[0]))
		return uint64(v), v < 0
	case 0xd1:
		v := int64(int16(binary.BigEndian.Uint16(p)))
		return uint64(v), v < 0
	case 0xd2:
		v := int64(int32(binary.BigEndian.Uint32(p)))
		return uint64(v), v < 0
	}
	v = binary.BigEndian.Uint64(p) // 0xd3
	return v, int64(v) < 0
}

// Uint reads a non-negative integer of at most max.
func (r *Reader) Uint(max uint64) uint64 {
	v, neg := r.integer()
	if neg || v > max {
		r.fail()
		return 0
	}
	return v
}

// Int reads an integer that fits an int64.
func (r *Reader) Int() int64 {
	v, neg := r.integer()
	if !neg && v > math.MaxInt64 {
		r.fail()
		return 0
	}
	return int64(v)
}

// str reads a msgpack string (not binary) and returns its bytes, which
// alias the input.
func (r *Reader) str() []byte {
	c, ok := r.peek()
	if !ok {
		return nil
	}
	r.b = r.b[1:]
	switch {
	case c&0xe0 == 0xa0:
		return r.take(int(c & 0x1f))
	case c == 0xd9:
		return r.take(r.length(1, 1))
	case c == 0xda:
		return r.take(r.length(2, 1))
	case c == 0xdb:
		return r.take(r.length(4, 1))
	}
	r.fail()
	return nil
}

// String reads a msgpack string.
func (r *Reader) String() string {
	return string(r.str())
}

// Bytes reads msgpack binary, or nil, and returns a copy.
func (r *Reader) Bytes() []byte {
	c, ok := r.peek()
	if !ok {
		return nil
	}
	r.b = r.b[1:]
	var p []byte
	switch c {
	case 0xc0:
		return nil
	case 0xc4:
		p = r.take(r.length(1, 1))
	case 0xc5:
		p = r.take(r.length(2, 1))
	case 0xc6:
		p = r.take(r.length(4, 1))
	default:
		r.fail()
	}
	if r.bad {
		return nil
	}
	return append(make([]byte, 0, len(p)), p...)
}
