package replication

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHopWatch: the warning comes at the threshold within a window, and
// not again within hopWarnEvery; takeovers spread over windows never
// reach it.
func TestHopWatch(t *testing.T) {
	var h hopWatch
	now := time.Unix(1_800_000_000, 0)
	for i := 1; i < hopThreshold; i++ {
		require.False(t, h.hop(now), "takeover %d", i)
	}
	require.True(t, h.hop(now), "the threshold")
	require.False(t, h.hop(now.Add(time.Second)), "warned once")
	later := now.Add(hopWarnEvery + time.Second)
	for i := 1; i < hopThreshold; i++ {
		require.False(t, h.hop(later), "takeover %d of a new window", i)
	}
	require.True(t, h.hop(later), "again after hopWarnEvery")

	var slow hopWatch
	for i := range 3 * hopThreshold {
		require.False(t, slow.hop(now.Add(time.Duration(i)*hopWindow/(hopThreshold/2))), "takeover %d", i)
	}
}

// TestRoundRobinWarns: requests that alternate between two nodes move
// the session every time, and each node's log says once how to route
// them.
func TestRoundRobinWarns(t *testing.T) {
	var logs logBuffer
	c := startSessions(t, 2, func(_ int, o *Options) { o.Logger = logs.logger(slog.LevelWarn) })
	h, err := c.nodes[0].s.Create(testCtx(t))
	require.NoError(t, err)
	id := h.ID()
	for i := range 2*hopThreshold + 4 {
		h, err := c.nodes[(i+1)%2].s.Get(testCtx(t), id)
		require.NoError(t, err)
		id = h.ID()
	}
	require.Equal(t, 2, strings.Count(logs.String(), "sessions move between nodes on most requests"), logs.String())
}
