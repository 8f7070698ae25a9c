package replication

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type testKey struct{}

// A logic test of the shared deadline, no network: a context bounded
// without a deadline of its own ends within the timeout (and the slack),
// not when the request it was made for ends (a Save goes on when the
// client leaves), says why through context.Cause (before, Cause named
// the request's cancellation), and carries the request's values.
func TestDeadlinesBound(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	defer stop()
	d := &deadlines{parent: parent, timeout: 50 * time.Millisecond}

	request, cancelRequest := context.WithCancel(context.WithValue(context.Background(), testKey{}, "v"))
	defer cancelRequest()
	detached := d.detached(request)
	cancelRequest() // the client went away
	require.NoError(t, detached.Err())
	for name, ctx := range map[string]context.Context{
		"detached from a request": detached,
		"bound, no deadline":      func() context.Context { c, _ := d.bound(context.WithoutCancel(request)); return c }(),
	} {
		t.Run(name, func(t *testing.T) {
			dl, ok := ctx.Deadline()
			require.True(t, ok)
			require.WithinDuration(t, time.Now().Add(d.timeout), dl, d.timeout+deadlineSlack)
			require.Equal(t, "v", ctx.Value(testKey{}))
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the bounded context never ended")
			}
			require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
			require.ErrorIs(t, context.Cause(ctx), context.DeadlineExceeded)
		})
	}

	// A lock wait that runs out reports it, and does not hold the lock.
	e := newEntry("k", 0)
	require.NoError(t, e.lock(context.Background()))
	require.ErrorIs(t, e.lock(d.detached(request)), context.DeadlineExceeded)

	// A caller's own deadline is kept; one that can end gets its own timer.
	own, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	got, done := d.bound(own)
	done()
	require.Equal(t, own, got)
	live, cancelLive := context.WithCancel(context.Background())
	defer cancelLive()
	got, done = d.bound(live)
	defer done()
	require.NotEqual(t, live, got)
	_, ok := got.Deadline()
	require.True(t, ok)
}
