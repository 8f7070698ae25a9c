// Package histogram is a fixed-bucket histogram of durations that many
// goroutines update without a lock, for latencies that Troupe's packages
// expose in their Stats without depending on a metrics library.
//
// A Histogram is made once with its bucket bounds (Exponential makes the
// usual ones), updated with Observe or ObserveSince on the hot path (two
// atomic adds and a short search), and read with Snapshot whenever a
// caller asks for Stats; nothing runs in the background. A Snapshot's
// buckets are not cumulative; Prometheus's are (package metrics converts).
package histogram

import (
	"slices"
	"sync/atomic"
	"time"
)

// Histogram counts durations into buckets by upper bound. All methods are
// safe for concurrent use; a nil *Histogram observes nothing and
// snapshots empty.
type Histogram struct {
	bounds []time.Duration // ascending upper bounds, inclusive
	counts []atomic.Uint64 // len(bounds)+1: the last counts what is over every bound
	sum    atomic.Int64    // nanoseconds
}

// New returns a Histogram with the given bucket upper bounds. The bounds
// are copied, sorted and deduplicated; with none, every observation lands
// in the one overflow bucket.
func New(bounds []time.Duration) *Histogram {
	b := slices.Clone(bounds)
	slices.Sort(b)
	b = slices.Compact(b)
	return &Histogram{bounds: b, counts: make([]atomic.Uint64, len(b)+1)}
}

// Exponential returns n bounds: start, start*factor, start*factor², …
// For example Exponential(100*time.Microsecond, 2, 16) spans 100 µs to
// about 3.3 s. It returns nil for n < 1, start <= 0 or factor <= 1.
func Exponential(start time.Duration, factor float64, n int) []time.Duration {
	if n < 1 || start <= 0 || factor <= 1 {
		return nil
	}
	out := make([]time.Duration, n)
	v := float64(start)
	for i := range out {
		out[i] = time.Duration(v)
		v *= factor
	}
	return out
}

// Observe counts one duration d. A negative d counts as zero.
func (h *Histogram) Observe(d time.Duration) {
	if h == nil {
		return
	}
	d = max(d, 0)
	i, _ := slices.BinarySearch(h.bounds, d) // the first bound >= d, or len(bounds)
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// ObserveSince counts the time since start: defer h.ObserveSince(time.Now())
// times the rest of a function.
func (h *Histogram) ObserveSince(start time.Time) { h.Observe(time.Since(start)) }

// Snapshot is a Histogram's state at one moment.
type Snapshot struct {
	// Bounds are the buckets' upper bounds, ascending, inclusive.
	Bounds []time.Duration
	// Counts has one more element than Bounds: Counts[i] counts the
	// observations in (Bounds[i-1], Bounds[i]], the last one those over
	// every bound. Not cumulative.
	Counts []uint64
	// Sum is the total of the observed durations.
	Sum time.Duration
}

// Count returns how many durations were observed.
func (s Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Snapshot returns the counts so far. Under concurrent Observes, Sum may
// include an observation that Counts does not yet show, or the reverse;
// Count always agrees with Counts.
func (h *Histogram) Snapshot() Snapshot {
	if h == nil {
		return Snapshot{}
	}
	s := Snapshot{Bounds: slices.Clone(h.bounds), Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}
