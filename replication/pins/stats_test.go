package pins

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
)

// Claims counts the pins a node won, Releases those it gave up by
// Release and by Leave, and Held those it holds now.
func TestStatsPinsClaimsReleases(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testCtx(t)
	for _, key := range []string{"cart/1", "cart/2", "cart/3"} {
		pin, err := a.pins.Pin(ctx, key)
		require.NoError(t, err)
		require.Equal(t, a.name(), pin.Owner)
	}
	require.Equal(t, Stats{Held: 3, Claims: 3}, a.pins.Stats())

	// Pinned elsewhere: b learns the owner and wins nothing.
	pin, err := b.pins.Pin(ctx, "cart/1")
	require.NoError(t, err)
	require.Equal(t, a.name(), pin.Owner)
	require.Equal(t, Stats{}, b.pins.Stats())

	require.NoError(t, a.pins.Release(ctx, "cart/1"))
	require.ErrorIs(t, b.pins.Release(ctx, "cart/2"), ErrNotOwner)
	require.Equal(t, Stats{Held: 2, Claims: 3, Releases: 1}, a.pins.Stats())
	require.Equal(t, Stats{}, b.pins.Stats(), "a refused Release is none")

	require.NoError(t, a.pins.Leave(ctx))
	require.Equal(t, Stats{Held: 0, Claims: 3, Releases: 3}, a.pins.Stats())
}

// A singleton's function counts a start each time it runs here and a stop
// each time it ends: returned by itself (and restarted), or stopped.
func TestStatsSingletonStartsStops(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 2)
	a, b := nodes[0], nodes[1]
	var runs atomic.Int32
	fn := func(ctx context.Context, _ uint64) {
		if runs.Add(1) == 1 {
			return // the first run ends by itself
		}
		<-ctx.Done()
	}
	s, err := a.pins.RunSingleton(context.Background(), "stats", fn)
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	require.Eventually(t, func() bool { return a.pins.Stats().SingletonStarts == 2 && s.Running() },
		clustertest.Timeout, 10*time.Millisecond)
	require.Equal(t, Stats{Claims: 0, SingletonsRunning: 1, SingletonStarts: 2, SingletonStops: 1}, a.pins.Stats(),
		"a singleton's claim is not a pin's")
	require.Equal(t, Stats{}, b.pins.Stats(), "not registered on b")

	s.Stop()
	require.Equal(t, Stats{SingletonStarts: 2, SingletonStops: 2}, a.pins.Stats())
}
