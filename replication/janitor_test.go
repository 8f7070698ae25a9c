package replication

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/membership"
)

// The sweep confirms every idle secondary copy with its primary and
// drops orphans. With more copies than one message can name, the single
// request it made was refused on every sweep, so orphans were never
// found: here 3000 copies against 64 KiB messages, about 40 bytes each.
func TestSweepConfirmsMoreCopiesThanAMessageHolds(t *testing.T) {
	c := startSessions(t, 2, func(_ int, o *Options) {
		o.MaxSessionSize = minSessionSize
		o.IdleTimeout = 8 * time.Second // a tick of 1 s; copies are confirmed after 4
		o.LeaseTerm = DefaultLeaseTerm
	}, func(_ int, cfg *membership.Config) { cfg.MaxMessageSize = 80 << 10 })
	p, sec := c.nodes[0], c.nodes[1]
	ctx := testCtx(t)

	const n = 3000
	var wg sync.WaitGroup
	keys := make(chan struct{}, 16)
	for range n {
		keys <- struct{}{}
		wg.Go(func() {
			defer func() { <-keys }()
			_, err := p.s.Create(ctx)
			require.NoError(t, err)
		})
	}
	wg.Wait()
	require.EqualValues(t, n, sec.s.nSecond.Load())

	// An orphan: a copy that names p as its primary, which never made it.
	orphan := newKey()
	st, _, ok := sec.s.applyOne(context.Background(), &applyReq{
		From: p.s.self, Inc: p.s.inc, Key: orphan, Epoch: 1, Members: 2, Version: 1, Full: true,
		Set: attrsOf(map[string][]byte{"a": []byte("b")}),
	}, true)
	require.True(t, ok)
	require.Equal(t, stOK, st)

	require.Eventually(t, func() bool { return sec.s.lookup(orphan) == nil },
		7*time.Second, 50*time.Millisecond, "the sweep did not drop the orphan copy (it expires only after 9 s)")
	require.EqualValues(t, n, sec.s.nSecond.Load(), "the sweep dropped copies that are not orphans")
}

// TestConfirmSaysStaleOnlyForANewerCopy, a logic test of the answer to
// the sweep's confirmation (the states are set by hand): a node answers
// that the asker's secondary copy is stale only when it holds a newer
// one, or is the primary at that epoch with another secondary. In the
// fault suite, a node whose install was under way (no role yet) answered
// "stale" to the node that kept the session for it, which dropped the
// only copy with the last writes; its old secondary, told "unknown" in
// turn, dropped the other, and the session was gone.
func TestConfirmSaysStaleOnlyForANewerCopy(t *testing.T) {
	c := startSessions(t, 2, nil)
	p, h := c.sessionOn(t, 0, "one")
	asker := c.nodes[1].s.self
	e := h.e
	epoch := e.state().epoch
	with := func(change func(st *state)) status {
		e.mu.Lock()
		saved := e.st
		change(&e.st)
		e.mu.Unlock()
		defer func() {
			e.mu.Lock()
			e.st = saved
			e.mu.Unlock()
		}()
		return p.s.confirmItem(asker, rankWire{Key: e.key, Epoch: epoch})
	}
	require.Equal(t, stOK, with(func(*state) {}))
	require.NotEqual(t, stStale, with(func(st *state) { st.role = roleNone }), "an entry being installed")
	require.NotEqual(t, stStale, with(func(st *state) {
		// A copy kept for a handover at a later epoch, from the lineage
		// of the asker's copy.
		st.role, st.kept = roleSecondary, &handover{handedFrom: st.rank()}
		st.epoch++
	}), "a kept copy that weighs what the asker's does")
	require.NotEqual(t, stStale, with(func(st *state) { st.role, st.epoch = roleSecondary, epoch-1 }), "an older copy")
	require.Equal(t, stStale, with(func(st *state) { st.epoch++ }), "a primary at a later epoch")
	require.Equal(t, stStale, with(func(st *state) { st.secondary = "another" }), "a primary with another secondary")
}

// TestConfirmEveryBacksOffForIdleCopies, a logic test of the sweep's
// rule for when an idle secondary copy is confirmed again: every 4 ticks
// while it is in use, less often the longer it has been idle, and never
// less often than maxConfirmRounds times that.
func TestConfirmEveryBacksOffForIdleCopies(t *testing.T) {
	const tick = int64(5 * time.Second)
	const confirmAge = 4 * tick
	for _, tc := range []struct {
		idle, want time.Duration
	}{
		{0, 20 * time.Second},
		{30 * time.Second, 20 * time.Second},
		{40 * time.Second, 20 * time.Second},
		{90 * time.Second, 45 * time.Second},
		{3 * time.Minute, 90 * time.Second},
		{4 * time.Minute, 2 * time.Minute},
		{10 * time.Minute, 2 * time.Minute},
		{30 * time.Minute, 2 * time.Minute},
	} {
		require.Equal(t, tc.want, time.Duration(confirmEvery(int64(tc.idle), confirmAge)), "idle for %v", tc.idle)
	}
}
