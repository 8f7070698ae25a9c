// Package quorum holds the one rule by which a node decides whether it
// may act for the cluster: take a session over, claim a pin, start a
// singleton. Every layer that takes something over asks Holds, so the
// rule changes in one place.
//
// The voters are the nodes that a layer counts (the members that hold
// sessions, or every member), alive now or failed within a window: a node
// that failed recently still counts against the side that lost it, so
// that the minority side of a partition, which sees the others as failed,
// does not act. Members that left gracefully do not count.
package quorum

import (
	"sync"
	"time"
)

// Holds reports whether a node that sees live voters alive (itself
// included) out of base voters (alive, or failed within the window) may
// act for the cluster: at least half of them.
func Holds(live, base int) bool { return 2*live >= base }

// Failures remembers when members failed, for a window, so that they
// count toward the base of Holds. The zero value is not usable; make one
// with NewFailures. Safe for concurrent use.
type Failures struct {
	window time.Duration
	mu     sync.Mutex
	at     map[string]time.Time
}

// NewFailures returns a record that counts a failure for window.
func NewFailures(window time.Duration) *Failures {
	return &Failures{window: window, at: map[string]time.Time{}}
}

// Failed records that member failed at t.
func (f *Failures) Failed(member string, t time.Time) {
	f.mu.Lock()
	f.at[member] = t
	f.mu.Unlock()
}

// Forget drops member: it joined again or left gracefully.
func (f *Failures) Forget(member string) {
	f.mu.Lock()
	delete(f.at, member)
	f.mu.Unlock()
}

// Recent returns how many members failed within the window before now,
// and forgets those that failed earlier.
func (f *Failures) Recent(now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for m, t := range f.at {
		if now.Sub(t) < f.window {
			n++
		} else {
			delete(f.at, m)
		}
	}
	return n
}

// Holds reports whether a node that sees live members alive, itself
// included, may act, counting the failures within the window.
func (f *Failures) Holds(live int, now time.Time) bool {
	return Holds(live, live+f.Recent(now))
}
