package replication

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Every Save is observed in Stats.SaveLatency, once, whether it changed
// something or not; a Save after Shutdown is not.
func TestStatsSaveLatency(t *testing.T) {
	c := startSessions(t, 2, nil)
	a := c.nodes[0]
	before := a.s.Stats().SaveLatency
	require.Zero(t, before.Count())
	require.Equal(t, saveLatencyBounds, before.Bounds)
	require.Len(t, before.Counts, len(saveLatencyBounds)+1)

	start := time.Now()
	for i := range 3 {
		_, h := c.sessionOn(t, 0, "x")
		if i == 0 {
			require.NoError(t, a.s.Save(testCtx(t), h), "nothing changed: still a Save")
		}
	}
	took := time.Since(start)
	st := a.s.Stats()
	require.Equal(t, uint64(4), st.SaveLatency.Count())
	require.Equal(t, uint64(3), st.Saves, "Saves counts only those that changed something")
	require.Positive(t, st.SaveLatency.Sum)
	require.LessOrEqual(t, st.SaveLatency.Sum, took)
	require.Zero(t, c.nodes[1].s.Stats().SaveLatency.Count(), "the secondary saved nothing")

	_, h := c.sessionOn(t, 0, "y")
	a.s.Shutdown()
	require.ErrorIs(t, a.s.Save(testCtx(t), h), ErrClosed)
	require.Equal(t, uint64(5), a.s.Stats().SaveLatency.Count())
}
