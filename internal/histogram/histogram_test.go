package histogram

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestExponential(t *testing.T) {
	require.Equal(t, []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond},
		Exponential(time.Millisecond, 2, 3))
	b := Exponential(100*time.Microsecond, 2, 16)
	require.Len(t, b, 16)
	require.Equal(t, 100*time.Microsecond<<15, b[15])
	require.Nil(t, Exponential(0, 2, 3))
	require.Nil(t, Exponential(time.Millisecond, 1, 3))
	require.Nil(t, Exponential(time.Millisecond, 2, 0))
}

// Each observation lands in the bucket of the first bound at or above it;
// bounds are inclusive, and what is over every bound goes to the last.
func TestObserveBuckets(t *testing.T) {
	h := New([]time.Duration{4 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, time.Millisecond})
	for _, d := range []time.Duration{0, -time.Second, time.Millisecond, 1500 * time.Microsecond, 2 * time.Millisecond, 3 * time.Millisecond, time.Hour} {
		h.Observe(d)
	}
	s := h.Snapshot()
	require.Equal(t, []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}, s.Bounds, "sorted, deduplicated")
	require.Equal(t, []uint64{3, 2, 1, 1}, s.Counts)
	require.Equal(t, uint64(7), s.Count())
	require.Equal(t, time.Hour+7500*time.Microsecond, s.Sum)

	s.Counts[0] = 99
	s.Bounds[0] = 0
	require.Equal(t, uint64(3), h.Snapshot().Counts[0], "a snapshot is a copy")
	require.Equal(t, time.Millisecond, h.Snapshot().Bounds[0])
}

func TestObserveSince(t *testing.T) {
	h := New(Exponential(time.Millisecond, 10, 3))
	h.ObserveSince(time.Now().Add(-50 * time.Millisecond))
	s := h.Snapshot()
	require.Equal(t, []uint64{0, 0, 1, 0}, s.Counts, "in (10ms, 100ms]")
	require.GreaterOrEqual(t, s.Sum, 50*time.Millisecond)
}

func TestNilAndEmpty(t *testing.T) {
	var h *Histogram
	h.Observe(time.Second)
	h.ObserveSince(time.Now())
	require.Zero(t, h.Snapshot().Count())

	h = New(nil)
	h.Observe(time.Second)
	require.Equal(t, []uint64{1}, h.Snapshot().Counts)
}

// Concurrent observations are all counted (run with -race).
func TestConcurrentObserve(t *testing.T) {
	h := New(Exponential(time.Microsecond, 2, 20))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.Observe(time.Duration(g*1000+i) * time.Microsecond)
				if i%100 == 0 {
					_ = h.Snapshot()
				}
			}
		})
	}
	wg.Wait()
	s := h.Snapshot()
	require.Equal(t, uint64(8000), s.Count())
	require.Equal(t, time.Duration(8000*7999/2)*time.Microsecond, s.Sum)
}

func BenchmarkObserve(b *testing.B) {
	h := New(Exponential(100*time.Microsecond, 2, 16))
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			h.Observe(d)
			d = (d + 37*time.Microsecond) % time.Second
		}
	})
}
