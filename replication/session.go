package replication

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/troupe-go/troupe/internal/wire"
)

// Session is a handle on one session, returned by Create and Get for one
// request. It holds a snapshot of the attributes plus the changes made
// through it; Save sends those changes to the primary's store and to the
// secondary. Two requests on the same session get two handles: each sees
// the state as of its Get plus its own changes, and each Save applies only
// its own changes, attribute by attribute, in the order the Saves run.
//
// A handle that FromRequest returns to a request without a session is
// new: no session exists for it until it is saved with an attribute set
// (the middleware does that when the handler returns), so that a request
// that stores nothing creates nothing. Until then its ID is "".
//
// A Session is safe for concurrent use.
type Session struct {
	s *Sessions

	// cmu serializes what makes or unmakes the handle's session: the
	// Save that creates it, RenewID, destroy. Lock order: above mu, and
	// above every lock of Sessions.
	cmu sync.Mutex

	mu   sync.Mutex
	e    *entry // nil while the session is new (not created yet)
	id   ID
	base attrs // the snapshot; never modified
	size int   // size of base with set and del applied
	set  attrs // changed in place: changes hands out copies
	del  map[string]struct{}
}

func newHandle(s *Sessions, e *entry, st state) *Session {
	h := &Session{s: s, e: e}
	h.reset(st)
	return h
}

// reset makes the handle show st with no pending changes.
func (h *Session) reset(st state) {
	h.id = ID{Key: h.e.key, Primary: h.s.idOf(st.primary)}
	if st.secondary != "" {
		h.id.Secondary = h.s.idOf(st.secondary)
	}
	h.base = st.attrs
	h.size = st.size
	h.set, h.del = nil, nil
}

// newSession returns a handle on a session that does not exist yet: the
// first Save that has an attribute to store creates it.
func newSession(s *Sessions) *Session { return &Session{s: s} }

// entry returns the handle's entry, nil while the session is new.
func (h *Session) entry() *entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.e
}

// bind makes a new handle show the session just created for it with the
// changes set and del.
func (h *Session) bind(e *entry, st state, set attrs, del []string) {
	h.mu.Lock()
	h.e = e
	h.mu.Unlock()
	h.saved(st, set, del)
}

// detach makes the handle new again: its attributes, all of them, become
// changes that the next Save stores in a session created for them. With
// keep false they are dropped too: an empty new session.
func (h *Session) detach(keep bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var set attrs
	if keep {
		set = h.base.with(h.set, slices.Collect(maps.Keys(h.del)))
	}
	h.e, h.id, h.base, h.set, h.del = nil, ID{}, nil, set, nil
	if !keep {
		h.size = 0
	}
}

// ID returns the session's routed id, "<key>!<primary>!<secondary>", as
// of the last Create, Get or Save of this handle, or "" for a session
// that does not exist yet (see FromRequest). Give it to the client (a
// cookie); a route change shows up as a different ID.
func (h *Session) ID() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.e == nil {
		return ""
	}
	return h.id.String()
}

// Route returns the parsed form of ID.
func (h *Session) Route() ID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.id
}

// Get returns an attribute's value and whether it is set. The slice must
// not be modified: it may be shared with other handles.
func (h *Session) Get(key string) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.getLocked(key)
}

func (h *Session) getLocked(key string) ([]byte, bool) {
	if v, ok := h.set.get(key); ok {
		return v, true
	}
	if _, ok := h.del[key]; ok {
		return nil, false
	}
	return h.base.get(key)
}

// Set sets an attribute to a copy of value. It returns an error wrapping
// ErrTooLarge, and changes nothing, if the session would exceed
// Options.MaxSessionSize.
func (h *Session) Set(key string, value []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	size := h.size + len(key) + len(value)
	if old, ok := h.getLocked(key); ok {
		size -= len(key) + len(old)
	}
	if limit := h.s.opts.MaxSessionSize; size > limit {
		return fmt.Errorf("%w: setting %q makes %d bytes, limit %d", ErrTooLarge, key, size, limit)
	}
	value = bytes.Clone(value)
	if value == nil {
		value = []byte{}
	}
	h.set = h.set.put(key, value)
	delete(h.del, key)
	h.size = size
	return nil
}

// Delete removes an attribute.
func (h *Session) Delete(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old, ok := h.getLocked(key)
	if !ok {
		return
	}
	h.size -= len(key) + len(old)
	h.set = h.set.remove(key)
	if _, inBase := h.base.get(key); inBase {
		if h.del == nil {
			h.del = map[string]struct{}{}
		}
		h.del[key] = struct{}{}
	}
}

// Keys returns the names of the attributes that are set, sorted.
func (h *Session) Keys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, a := range h.base.with(h.set, slices.Collect(maps.Keys(h.del))) {
		out = append(out, a.k)
	}
	return out
}

// Size returns the session's size as MaxSessionSize counts it: the sum of
// the lengths of attribute names and values.
func (h *Session) Size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.size
}

// Changed reports whether the handle has changes that Save would send.
func (h *Session) Changed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.set)+len(h.del) > 0
}

// changes returns the pending changes, to be sent by Save.
func (h *Session) changes() (set attrs, del []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.set), slices.Collect(maps.Keys(h.del))
}

// saved makes the handle show st after a Save of the changes it took; it
// keeps changes made since then.
func (h *Session) saved(st state, set attrs, del []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range set {
		if cur, ok := h.set.get(a.k); ok && sameSlice(cur, a.v) {
			h.set = h.set.remove(a.k)
		}
	}
	for _, k := range del {
		delete(h.del, k)
	}
	pendSet, pendDel := h.set, h.del
	h.reset(st)
	h.set, h.del = pendSet, pendDel
	for _, a := range h.set {
		if old, ok := st.attrs.get(a.k); ok {
			h.size -= len(a.k) + len(old)
		}
		h.size += len(a.k) + len(a.v)
	}
	for k := range h.del {
		if old, ok := st.attrs.get(k); ok {
			h.size -= len(k) + len(old)
		}
	}
}

func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// SetValue encodes v with msgpack and sets it as attribute key. It returns
// the encoding error, or an error wrapping ErrTooLarge.
func SetValue[T any](s *Session, key string, v T) error {
	b, err := wire.Marshal(v)
	if err != nil {
		return fmt.Errorf("replication: attribute %q: %w", key, err)
	}
	return s.Set(key, b)
}

// GetValue decodes attribute key, set with SetValue, into a T. ok is
// false when the attribute is not set; err reports a value that does not
// decode as a T.
func GetValue[T any](s *Session, key string) (v T, ok bool, err error) {
	b, ok := s.Get(key)
	if !ok {
		return v, false, nil
	}
	if err := wire.Unmarshal(b, &v); err != nil {
		return v, true, fmt.Errorf("replication: attribute %q: %w", key, err)
	}
	return v, true, nil
}
