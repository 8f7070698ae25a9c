// Package quorum holds the one rule by which a node decides whether it
// may act for the cluster: take a session over, claim a pin, start a
// singleton, acknowledge a replicated write. Every layer that takes
// something over asks Holds, so the rule changes in one place.
//
// The voters are the nodes that a layer counts (the members that hold
// sessions, or every member), alive now or failed within a window: a node
// that failed recently still counts against the side that lost it, so
// that the minority side of a partition, which sees the others as failed,
// does not act. Members that left gracefully do not count.
//
// A side acts when it holds a strict majority of the voters. An even
// split (every split of a two-node cluster) is decided by a tie-breaker
// both sides compute alike from the same voters: the half that holds the
// voter whose name sorts first acts, the other half does not. So at most
// one side of any split acts, and a two-node cluster keeps working when
// the node whose name sorts last is lost.
package quorum

import (
	"slices"
	"sync"
	"time"
)

// Holds reports whether a node that sees the voters live alive (itself
// included), while the voters failed failed within the window, may act
// for the cluster: live is more than half of all of them, or exactly half
// and holds the first name of all of them in sorted order.
func Holds(live, failed []string) bool {
	var t Tally
	for _, name := range live {
		t.Add(name, true)
	}
	for _, name := range failed {
		t.Add(name, false)
	}
	return t.Holds()
}

// Tally is Holds for a caller that walks its voters one at a time: it
// counts them without keeping their names, so a check on every write
// allocates nothing. The zero Tally has no voters.
type Tally struct {
	live, all int
	first     string // the voter whose name sorts first
	firstLive bool
}

// Add counts one voter, alive or failed within the window.
func (t *Tally) Add(name string, alive bool) {
	if t.all == 0 || name < t.first {
		t.first, t.firstLive = name, alive
	}
	t.all++
	if alive {
		t.live++
	}
}

// Holds reports what Holds does for the voters added.
func (t *Tally) Holds() bool {
	switch {
	case 2*t.live > t.all:
		return true
	case 2*t.live < t.all || t.live == 0:
		return false
	}
	return t.firstLive
}

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

// Recent returns the members that failed within the window before now,
// and forgets those that failed earlier.
func (f *Failures) Recent(now time.Time) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for m, t := range f.at {
		if now.Sub(t) < f.window {
			out = append(out, m)
		} else {
			delete(f.at, m)
		}
	}
	return out
}

// Lost returns the voters that count against live (for Holds): the
// members that failed within the window before now and are not live
// again, and suspects, members not failed yet that missed their probes.
func (f *Failures) Lost(live, suspects []string, now time.Time) []string {
	failed := slices.DeleteFunc(f.Recent(now), func(m string) bool {
		return slices.Contains(live, m) || slices.Contains(suspects, m)
	})
	return append(failed, suspects...)
}

// Poll asks every voter in live but self, at once, and reports whether
// self and those whose ask returned true hold the quorum among all the
// voters, live and lost (Holds): a quorum that answers, not merely one
// that this node counts. A voter that does not answer counts against.
func Poll(self string, live, lost []string, ask func(voter string) bool) bool {
	var mu sync.Mutex
	yes := []string{self}
	var wg sync.WaitGroup
	for _, v := range live {
		if v == self {
			continue
		}
		wg.Go(func() {
			if ask(v) {
				mu.Lock()
				yes = append(yes, v)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var no []string
	for _, v := range append(slices.Clone(live), lost...) {
		if !slices.Contains(yes, v) {
			no = append(no, v)
		}
	}
	return Holds(yes, no)
}
