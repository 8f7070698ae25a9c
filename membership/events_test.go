package membership_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// next returns the next event that is not about the subscriber's own
// startup, failing the test at the deadline.
func next(t *testing.T, sub *membership.Subscription) membership.Event {
	t.Helper()
	select {
	case ev, ok := <-sub.Events():
		require.True(t, ok, "subscription closed: %v", sub.Err())
		return ev
	case <-time.After(clustertest.Timeout):
		t.Fatal("no event before the deadline")
	}
	return membership.Event{}
}

func TestEventsCrashIsFailAndLeaveIsLeave(t *testing.T) {
	tc := clustertest.Start(t, 4)
	tc.WaitMembers(4)
	observers := tc.Nodes[:2]
	subs := make([]*membership.Subscription, len(observers))
	for i, o := range observers {
		subs[i] = o.Subscribe()
		t.Cleanup(subs[i].Close)
		// A subscription starts with a join for every current member.
		for range 4 {
			require.Equal(t, membership.EventJoin, next(t, subs[i]).Type)
		}
	}

	tc.Nodes[3].Shutdown() // a crash: no goodbye
	for _, s := range subs {
		ev := next(t, s)
		require.Equal(t, membership.EventFail, ev.Type)
		require.Equal(t, "node-3", ev.Member.Name)
		require.Equal(t, membership.StateFailed, ev.Member.State)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, tc.Nodes[2].Leave(ctx))
	require.Equal(t, membership.ClusterLeft, tc.Nodes[2].State())
	for _, s := range subs {
		ev := next(t, s)
		require.Equal(t, membership.EventLeave.String()+":node-2", ev.Type.String()+":"+ev.Member.Name)
	}
	clustertest.WaitMembers(t, observers, 2)
	require.ErrorIs(t, tc.Nodes[2].Leave(ctx), membership.ErrShutdown)
}

// Every subscriber sees the same events in the same order, and a
// subscriber may call back into the Cluster while handling an event (which
// deadlocks with memberlist's own event callbacks).
func TestEventsSameOrderEverywhereAndReentrant(t *testing.T) {
	tc := clustertest.Start(t, 1)
	obs := tc.Nodes[0]
	const subsN = 3
	logs := make([]chan []string, subsN)
	for i := range subsN {
		sub := obs.Subscribe()
		t.Cleanup(sub.Close)
		logs[i] = make(chan []string, 1)
		go func() {
			var seen []string
			for ev := range sub.Events() {
				_ = obs.Members() // re-entrant call from the delivery goroutine
				seen = append(seen, ev.Type.String()+":"+ev.Member.Name)
				if len(seen) == 1+5+5 { // self, five joins, five departures
					logs[i] <- seen
					return
				}
			}
		}()
	}
	for range 5 {
		tc.Add(func(c *membership.Config) { c.WellKnown = []string{obs.Addr()} })
	}
	tc.WaitMembers(6)
	for _, n := range tc.Nodes[1:] {
		n.Shutdown()
		clustertest.WaitMembers(t, []*membership.Cluster{obs}, obs.NumMembers()-1)
	}
	var first []string
	for i := range subsN {
		select {
		case got := <-logs[i]:
			if first == nil {
				first = got
			}
			require.Equal(t, first, got)
		case <-time.After(clustertest.Timeout):
			t.Fatal("subscriber did not see all events")
		}
	}
}

// A subscriber that never reads must not stall the node or other
// subscribers.
func TestEventsSlowSubscriberNeverBlocks(t *testing.T) {
	tc := clustertest.Start(t, 1)
	stuck := tc.Nodes[0].Subscribe() // never read
	t.Cleanup(stuck.Close)
	live := tc.Nodes[0].Subscribe()
	t.Cleanup(live.Close)
	require.Equal(t, "node-0", next(t, live).Member.Name)
	for range 3 {
		tc.Add(func(c *membership.Config) { c.WellKnown = []string{tc.Nodes[0].Addr()} })
	}
	tc.WaitMembers(4)
	for range 3 {
		require.Equal(t, membership.EventJoin, next(t, live).Type)
	}
	require.NoError(t, stuck.Err(), "a slow subscriber is only dropped when its bounded queue overflows")
}

func TestEventsUpdateMeta(t *testing.T) {
	tc := clustertest.Start(t, 2, func(i int, c *membership.Config) {
		c.Role = "worker"
		c.Tags = map[string]string{"http": "127.0.0.1:8080"}
	})
	tc.WaitMembers(2)
	sub := tc.Nodes[0].Subscribe()
	t.Cleanup(sub.Close)
	next(t, sub)
	next(t, sub)

	ctx := context.Background()
	require.NoError(t, tc.Nodes[1].UpdateMeta(ctx, func(m *membership.Meta) {
		m.Weight = 7
		m.Tags["http"] = "127.0.0.1:9090"
	}))
	ev := next(t, sub)
	require.Equal(t, membership.EventUpdate, ev.Type)
	require.Equal(t, 7, ev.Member.Weight)
	require.Equal(t, "worker", ev.Member.Role)
	require.Equal(t, "127.0.0.1:9090", ev.Member.Tag("http"))
	m, ok := tc.Nodes[0].Member("node-1")
	require.True(t, ok)
	require.Equal(t, 7, m.Weight)

	err := tc.Nodes[1].UpdateMeta(ctx, func(m *membership.Meta) {
		m.Tags["blob"] = string(make([]byte, 600))
	})
	require.ErrorIs(t, err, membership.ErrMetaTooLarge)
	local := tc.Nodes[1].LocalMember()
	require.Equal(t, "127.0.0.1:9090", local.Tag("http"), "a refused update changes nothing")
	require.Empty(t, local.Tag("blob"))
}

// TestEveryoneLeavesAtOnce: a whole cluster stopped together (a
// deployment taken down) leaves without errors, although no member is
// left to relay the last leave broadcasts.
func TestEveryoneLeavesAtOnce(t *testing.T) {
	t.Parallel()
	tc := clustertest.Start(t, 3)
	var wg sync.WaitGroup
	errs := make([]error, len(tc.Nodes))
	for i, n := range tc.Nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs[i] = n.Leave(ctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "node %d", i)
	}
}
