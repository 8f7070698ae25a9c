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
		Set: map[string][]byte{"a": []byte("b")},
	}, true)
	require.True(t, ok)
	require.Equal(t, stOK, st)

	require.Eventually(t, func() bool { return sec.s.lookup(orphan) == nil },
		7*time.Second, 50*time.Millisecond, "the sweep did not drop the orphan copy (it expires only after 9 s)")
	require.EqualValues(t, n, sec.s.nSecond.Load(), "the sweep dropped copies that are not orphans")
}
