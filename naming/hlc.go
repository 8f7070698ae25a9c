package naming

import "time"

// A hybrid logical clock orders writes across nodes: its timestamps
// follow wall-clock time closely, never go backwards on one node, and are
// always later than any timestamp the node has received, so a write made
// after seeing another is ordered after it even if the clocks disagree.
//
// A timestamp is a uint64: the upper 48 bits are Unix milliseconds, the
// lower 16 a logical counter. Comparing two timestamps is comparing the
// integers; a counter that overflows carries into the milliseconds, which
// only happens past 65,536 writes in one millisecond.
type hlc struct {
	last uint64
	now  func() time.Time
}

const (
	logicalBits = 16
	// maxDrift bounds how far ahead of the local wall clock a received
	// timestamp may pull this clock. A peer whose clock runs further ahead
	// still has its writes ordered by their timestamps, but does not drag
	// every other node's clock with it.
	maxDrift = time.Minute
)

func physical(t time.Time) uint64 { return uint64(t.UnixMilli()) << logicalBits }

// tsTime returns the wall-clock part of a timestamp.
func tsTime(ts uint64) time.Time { return time.UnixMilli(int64(ts >> logicalBits)) }

// Now returns a timestamp later than every one returned or observed before.
func (c *hlc) Now() uint64 {
	p := physical(c.now())
	if p > c.last {
		c.last = p
	} else {
		c.last++
	}
	return c.last
}

// Observe moves the clock past a received timestamp (within maxDrift).
func (c *hlc) Observe(ts uint64) {
	if ts > c.last && ts <= physical(c.now().Add(maxDrift)) {
		c.last = ts
	}
}
