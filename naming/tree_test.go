package naming

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

func TestBindVisibleOnEveryNodeAndUnbind(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 5)
	require.NoError(t, tc.trees[1].Bind(ctx(t), "ejb/OrderService", []byte("v1")))
	eventually(t, tc.trees, "bound everywhere", func(tr *Tree) bool { return bound(tr, "ejb/OrderService", "node-1=v1") })

	err := tc.trees[2].Bind(ctx(t), "ejb/OrderService", []byte("mine"))
	require.ErrorIs(t, err, ErrNameBound)
	require.ErrorIs(t, tc.trees[1].Bind(ctx(t), "/ejb/OrderService/", []byte("again")), ErrNameBound)

	require.NoError(t, tc.trees[1].Rebind(ctx(t), "ejb/OrderService", []byte("v2")))
	eventually(t, tc.trees, "rebound everywhere", func(tr *Tree) bool { return bound(tr, "ejb/OrderService", "node-1=v2") })
	require.ErrorIs(t, tc.trees[2].Rebind(ctx(t), "ejb/OrderService", []byte("steal")), ErrNameBound)

	require.ErrorIs(t, tc.trees[2].Unbind(ctx(t), "ejb/OrderService"), ErrNotFound)
	require.NoError(t, tc.trees[1].Unbind(ctx(t), "ejb/OrderService"))
	eventually(t, tc.trees, "unbound everywhere", func(tr *Tree) bool { return bound(tr, "ejb/OrderService") })
	converged(t, tc.trees)
	for _, tr := range tc.trees {
		s := tr.Stats()
		assert.Zero(t, s.Malformed+s.Foreign+s.Oversized, "%s: %+v", tr.self, s)
	}
}

// A failed node's node-scoped bindings vanish everywhere; a node that
// leaves gracefully likewise; cluster-scoped bindings survive both.
func TestFailedNodeBindingsVanishClusterScopedSurvive(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 5)
	c := ctx(t)
	require.NoError(t, tc.trees[2].Bind(c, "svc/two", []byte("2")))
	require.NoError(t, tc.trees[3].Bind(c, "svc/three", []byte("3")))
	require.NoError(t, tc.trees[2].Bind(c, "cfg/db", []byte("postgres://db"), WithScope(ClusterScope)))
	require.NoError(t, tc.trees[3].Bind(c, "cfg/cache", []byte("redis://c"), WithScope(ClusterScope)))
	eventually(t, tc.trees, "all bound", func(tr *Tree) bool {
		return bound(tr, "svc/two", "node-2=2") && bound(tr, "svc/three", "node-3=3") &&
			bound(tr, "cfg/db", "node-2=postgres://db") && bound(tr, "cfg/cache", "node-3=redis://c")
	})
	b, err := tc.trees[0].Lookup("cfg/db")
	require.NoError(t, err)
	require.Equal(t, ClusterScope, b.Scope)

	tc.kill(2)
	require.NoError(t, tc.trees[3].cluster.Leave(c))
	rest := []*Tree{tc.trees[0], tc.trees[1], tc.trees[4]}
	eventually(t, rest, "node-scoped bindings of departed nodes gone", func(tr *Tree) bool {
		return bound(tr, "svc/two") && bound(tr, "svc/three")
	})
	for _, tr := range rest {
		assert.True(t, bound(tr, "cfg/db", "node-2=postgres://db"), "cluster-scoped binding survives on %s", tr.self)
		assert.True(t, bound(tr, "cfg/cache", "node-3=redis://c"), "cluster-scoped binding survives on %s", tr.self)
	}
	// The cluster-scoped binding can still be changed and removed.
	require.NoError(t, tc.trees[4].Rebind(c, "cfg/db", []byte("postgres://db2"), WithScope(ClusterScope)))
	require.NoError(t, tc.trees[0].Unbind(c, "cfg/cache"))
	eventually(t, rest, "cluster-scoped rebind and unbind", func(tr *Tree) bool {
		return bound(tr, "cfg/db", "node-4=postgres://db2") && bound(tr, "cfg/cache")
	})
	converged(t, rest)
}

// A node that crashes and comes back under the same name starts with an
// empty set of bindings: its old ones do not come back.
func TestRestartedNodeDoesNotResurrectBindings(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 3)
	c := ctx(t)
	require.NoError(t, tc.trees[2].Bind(c, "old/binding", []byte("x")))
	eventually(t, tc.trees, "bound", func(tr *Tree) bool { return bound(tr, "old/binding", "node-2=x") })
	tc.kill(2)
	rest := tc.trees[:2]
	eventually(t, rest, "gone after the crash", func(tr *Tree) bool { return bound(tr, "old/binding") })

	tc.quiesce()
	first := tc.Nodes[0].Addr()
	node := tc.Add(func(cfg *membership.Config) {
		cfg.NodeName = "node-2"
		cfg.BindAddr = clustertest.Host(5) + ":0"
		cfg.WellKnown = []string{first}
		cfg.Faults = nil
	})
	clustertest.WaitMembers(t, []*membership.Cluster{tc.Nodes[0], tc.Nodes[1], node}, 3)
	tr := newTree(t, node, Options{})
	require.NoError(t, tr.Bind(c, "new/binding", []byte("y")))
	all := []*Tree{tc.trees[0], tc.trees[1], tr}
	eventually(t, all, "new binding visible", func(tr *Tree) bool { return bound(tr, "new/binding", "node-2=y") })
	converged(t, all)
	for _, tr := range all {
		assert.True(t, bound(tr, "old/binding"), "%s resurrected the old binding", tr.self)
	}
}

// Bindings made by a node that closes its tree (but stays a member) go
// away everywhere.
func TestCloseRetiresBindings(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 3)
	require.NoError(t, tc.trees[1].Bind(ctx(t), "a", []byte("1")))
	eventually(t, tc.trees, "bound", func(tr *Tree) bool { return bound(tr, "a", "node-1=1") })
	require.NoError(t, tc.trees[1].Close())
	require.NoError(t, tc.trees[1].Close(), "Close twice")
	require.ErrorIs(t, tc.trees[1].Bind(ctx(t), "b", nil), ErrClosed)
	eventually(t, []*Tree{tc.trees[0], tc.trees[2]}, "retired", func(tr *Tree) bool { return bound(tr, "a") })
}

// Values too large for one gossip packet are announced and fetched.
func TestLargeValuesReplicate(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 3)
	big := make([]byte, 20_000)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	c := ctx(t)
	require.NoError(t, tc.trees[0].Bind(c, "big/node", big))
	require.NoError(t, tc.trees[0].Bind(c, "big/cluster", big, WithScope(ClusterScope)))
	eventually(t, tc.trees, "large values everywhere", func(tr *Tree) bool {
		return bound(tr, "big/node", "node-0="+string(big)) && bound(tr, "big/cluster", "node-0="+string(big))
	})
	require.ErrorIs(t, tc.trees[0].Bind(c, "too/big", make([]byte, DefaultMaxValueSize+1)), ErrTooLarge)
}

func TestClusterableOffersAndPolicies(t *testing.T) {
	t.Parallel()
	weights := []int{100, 200, 300}
	roles := []string{"manager", "worker", "worker"}
	tc := startTrees(t, 3, func(i int, c *membership.Config) { c.Weight, c.Role = weights[i], roles[i] })
	c := ctx(t)
	for i, tr := range tc.trees {
		require.NoError(t, tr.Bind(c, "svc/orders", []byte(fmt.Sprintf("v%d", i)), Clusterable()))
	}
	eventually(t, tc.trees, "three offers", func(tr *Tree) bool {
		return bound(tr, "svc/orders", "node-0=v0", "node-1=v1", "node-2=v2")
	})
	b, err := tc.trees[0].Lookup("svc/orders")
	require.NoError(t, err)
	require.True(t, b.Clusterable)
	eventually(t, tc.trees, "members with metadata", func(tr *Tree) bool { return len(*tr.members.Load()) == 3 })

	// A non-clusterable bind of a clusterable name is refused.
	require.NoError(t, tc.trees[0].Unbind(c, "svc/orders"))
	eventually(t, tc.trees[:1], "offer withdrawn", func(tr *Tree) bool { return bound(tr, "svc/orders", "node-1=v1", "node-2=v2") })
	require.ErrorIs(t, tc.trees[0].Bind(c, "svc/orders", []byte("solo")), ErrNameBound)
	require.NoError(t, tc.trees[0].Bind(c, "svc/orders", []byte("v0"), Clusterable()))
	eventually(t, tc.trees, "three offers again", func(tr *Tree) bool {
		return bound(tr, "svc/orders", "node-0=v0", "node-1=v1", "node-2=v2")
	})

	tr := tc.trees[1]
	count := func(p Policy, n int) map[string]int {
		got := map[string]int{}
		for range n {
			o, err := tr.Select("svc/orders", p)
			require.NoError(t, err)
			got[o.Node]++
		}
		return got
	}
	t.Run("RoundRobin", func(t *testing.T) {
		rr := RoundRobin()
		var seq []string
		for range 6 {
			o, err := tr.Select("svc/orders", rr)
			require.NoError(t, err)
			seq = append(seq, o.Node)
		}
		assert.Equal(t, []string{"node-0", "node-1", "node-2", "node-0", "node-1", "node-2"}, seq)
		assert.Equal(t, map[string]int{"node-0": 100, "node-1": 100, "node-2": 100}, count(rr, 300))
	})
	t.Run("Weighted", func(t *testing.T) {
		got := count(Weighted(), 6000)
		for i, w := range weights {
			want := 6000 * w / 600
			assert.InDelta(t, want, got[fmt.Sprintf("node-%d", i)], 200, "weight %d: %v", w, got)
		}
	})
	t.Run("Random", func(t *testing.T) {
		got := count(Random(), 3000)
		for i := range 3 {
			assert.InDelta(t, 1000, got[fmt.Sprintf("node-%d", i)], 200, "%v", got)
		}
	})
	t.Run("PreferLocal", func(t *testing.T) {
		assert.Equal(t, map[string]int{"node-1": 100}, count(PreferLocal(RoundRobin()), 100))
	})
	t.Run("Sticky", func(t *testing.T) {
		s := NewSticky(Random())
		got := count(s, 100)
		assert.Len(t, got, 1)
		assert.Equal(t, 100, got[s.Node()])
	})
	t.Run("WithRole", func(t *testing.T) {
		got := count(WithRole("worker", RoundRobin()), 100)
		assert.Equal(t, map[string]int{"node-1": 50, "node-2": 50}, got)
		_, err := tr.Select("svc/orders", WithRole("nobody", RoundRobin()))
		assert.ErrorIs(t, err, ErrNoOffer)
	})
	t.Run("NotFound", func(t *testing.T) {
		_, err := tr.Select("svc/none", RoundRobin())
		assert.ErrorIs(t, err, ErrNotFound)
	})
}

// A policy never picks a failed node, even before the failed node's
// offers are removed from the tree.
func TestSelectSkipsFailedNodes(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 3)
	c := ctx(t)
	for _, tr := range tc.trees {
		require.NoError(t, tr.Bind(c, "svc", []byte(tr.self), Clusterable()))
	}
	eventually(t, tc.trees, "three offers", func(tr *Tree) bool { return bound(tr, "svc", "node-0=node-0", "node-1=node-1", "node-2=node-2") })
	tc.kill(2)
	eventually(t, tc.trees[:2], "failed node's offer gone", func(tr *Tree) bool {
		for range 30 {
			if o, err := tr.Select("svc", Random()); err != nil || o.Node == "node-2" {
				return false
			}
		}
		return true
	})
	// Direct check of the filter: an offer of a node that is not a live
	// member is never a candidate.
	tr := tc.trees[0]
	_, err := tr.pick(Binding{Name: "x", Offers: []Offer{{Node: "node-9"}}}, First(), nil)
	require.ErrorIs(t, err, ErrNoOffer)
}

func TestWatchOrderedEvents(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 2)
	c := ctx(t)
	require.NoError(t, tc.trees[0].Bind(c, "jms/queues/a", []byte("1")))
	eventually(t, tc.trees, "bound", func(tr *Tree) bool { return bound(tr, "jms/queues/a", "node-0=1") })

	local, err := tc.trees[0].Watch(c, "jms")
	require.NoError(t, err)
	defer local.Close()
	remote, err := tc.trees[1].Watch(c, "jms/queues")
	require.NoError(t, err)
	defer remote.Close()
	require.NoError(t, tc.trees[0].Rebind(c, "jms/queues/a", []byte("2")))
	require.NoError(t, tc.trees[0].Bind(c, "other/x", []byte("ignored")))
	require.NoError(t, tc.trees[0].Unbind(c, "jms/queues/a"))
	render := func(ev Event) string {
		if ev.Type == EventUnbound {
			return fmt.Sprintf("%s %s (was %s)", ev.Type, ev.Name, offerValue(ev.Old))
		}
		return fmt.Sprintf("%s %s %s", ev.Type, ev.Name, offerValue(ev.Binding))
	}
	// The binding node applies every change, in order; it starts with the
	// names bound when Watch was called.
	want := []string{"bound jms/queues/a 1", "rebound jms/queues/a 2", "unbound jms/queues/a (was 2)"}
	for i, exp := range want {
		require.Equal(t, exp, render(<-local.Events()), "event %d", i)
	}
	// Another node sees the same order, though gossip may coalesce quick
	// successive changes of one name into the last one.
	var got []string
	for ev := range remote.Events() {
		got = append(got, render(ev))
		if ev.Type == EventUnbound {
			break
		}
	}
	require.Equal(t, want[0], got[0])
	require.Contains(t, got[len(got)-1], "unbound jms/queues/a")
	local.Close()
	for range local.Events() {
	}
	require.NoError(t, local.Err())
}

func offerValue(b Binding) string {
	if len(b.Offers) == 0 {
		return ""
	}
	return string(b.Offers[0].Value)
}

// A watcher that does not read is dropped; the tree goes on.
func TestWatchSlowWatcherDropped(t *testing.T) {
	t.Parallel()
	tc := clustertest.Start(t, 1, noFaults)
	tr := newTree(t, tc.Nodes[0], Options{WatchBuffer: 10})
	c := ctx(t)
	w, err := tr.Watch(c, "")
	require.NoError(t, err)
	for i := range 50 {
		require.NoError(t, tr.Bind(c, fmt.Sprintf("n/%d", i), nil))
	}
	for range w.Events() {
	}
	require.ErrorIs(t, w.Err(), ErrSlowWatcher)
	require.Equal(t, 50, tr.Len())
}

func TestListContexts(t *testing.T) {
	t.Parallel()
	tc := clustertest.Start(t, 1, noFaults)
	tr := newTree(t, tc.Nodes[0], Options{})
	c := ctx(t)
	for _, n := range []string{"jms/queues/Orders", "jms/queues/Billing", "jms/topics/News", "jms/factory", "jms-old", "jms/queues", "ejb/x"} {
		require.NoError(t, tr.Bind(c, n, []byte(n)))
	}
	kids, err := tr.List("jms")
	require.NoError(t, err)
	var got []string
	for _, k := range kids {
		got = append(got, fmt.Sprintf("%s bound=%v ctx=%v", k.Name, k.Bound, k.Context))
	}
	assert.Equal(t, []string{
		"jms/factory bound=true ctx=false",
		"jms/queues bound=true ctx=true",
		"jms/topics bound=false ctx=true",
	}, got)
	kids, err = tr.List("")
	require.NoError(t, err)
	got = nil
	for _, k := range kids {
		got = append(got, k.Name)
	}
	assert.Equal(t, []string{"ejb", "jms", "jms-old"}, got)
	kids, err = tr.List("jms/queues/")
	require.NoError(t, err)
	assert.Len(t, kids, 2)
	_, err = tr.List("bad//prefix")
	assert.ErrorIs(t, err, ErrInvalidName)
}

func TestLimits(t *testing.T) {
	t.Parallel()
	tc := clustertest.Start(t, 1, noFaults)
	tr := newTree(t, tc.Nodes[0], Options{MaxBindings: 3, MaxMemberBindings: 3, MaxValueSize: 100})
	c := ctx(t)
	require.ErrorIs(t, tr.Bind(c, "v", make([]byte, 101)), ErrTooLarge)
	for i := range 3 {
		require.NoError(t, tr.Bind(c, fmt.Sprintf("n%d", i), nil))
	}
	err := tr.Bind(c, "n3", nil)
	require.ErrorIs(t, err, ErrTooLarge)
	require.NoError(t, tr.Rebind(c, "n0", []byte("replacing is fine")))
	require.ErrorIs(t, tr.Bind(c, "x", nil, WithScope(ClusterScope), Clusterable()), ErrInvalidOptions)
	require.ErrorIs(t, tr.Bind(c, "a//b", nil), ErrInvalidName)
	require.True(t, errors.Is(tr.Unbind(c, "nothing"), ErrNotFound))
}
