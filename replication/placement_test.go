package replication

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// TestPlacementGroups: 6 nodes in 3 replication groups of 2. Every
// secondary is outside its primary's group, and secondaries spread
// evenly: each node backs about as many sessions as it serves.
func TestPlacementGroups(t *testing.T) {
	const perNode = 24
	group := func(i int) string { return fmt.Sprintf("rack-%d", i/2) }
	c := startSessions(t, 6, nil, func(i int, cfg *membership.Config) { cfg.Group = group(i) })
	for i := range 6 {
		require.Equal(t, group(i), c.nodes[i].c.LocalMember().Group)
	}
	// Every node must see the others' groups before placing.
	require.Eventually(t, func() bool {
		for _, n := range c.nodes {
			for _, m := range n.c.Members() {
				if m.Group == "" {
					return false
				}
			}
		}
		return true
	}, clustertest.Timeout, 10*time.Millisecond)
	c.waitPeers()

	for range perNode {
		for i, n := range c.nodes {
			h, err := n.s.Create(testCtx(t))
			require.NoError(t, err)
			secIdx, _ := c.byID(h.Route().Secondary)
			require.NotEqual(t, group(i), group(secIdx), "secondary in the primary's group")
		}
	}
	counts := make([]int, 6)
	for i, n := range c.nodes {
		st := n.s.Stats()
		require.Equal(t, perNode, st.Primaries)
		counts[i] = st.Secondaries
	}
	t.Logf("secondaries per node: %v", counts)
	total := 0
	for _, k := range counts {
		total += k
		require.InDelta(t, perNode, k, 2, "secondaries per node: %v", counts)
	}
	require.Equal(t, 6*perNode, total)
}

// TestPlacementSameGroup: when every other node is in the primary's
// group, the secondary goes there anyway.
func TestPlacementSameGroup(t *testing.T) {
	c := startSessions(t, 2, nil, func(_ int, cfg *membership.Config) { cfg.Group = "one-rack" })
	require.Eventually(t, func() bool {
		m, ok := c.nodes[0].c.Member(c.nodes[1].c.Name())
		return ok && m.Group == "one-rack"
	}, clustertest.Timeout, 10*time.Millisecond)
	h, err := c.nodes[0].s.Create(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, c.nodes[1].s.NodeID(), h.Route().Secondary)
}

// TestSingleNode: alone, a session has no secondary and its route says
// so; when a second node arrives, the session gets it as secondary and
// the route changes.
func TestSingleNode(t *testing.T) {
	c := startSessions(t, 1, func(_ int, o *Options) { o.IdleTimeout = 2 * time.Second })
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	require.Empty(t, h.Route().Secondary)
	require.Contains(t, h.ID(), "!none")
	set(t, a, h, "v", "alone")

	b := c.add(nil)
	c.tc.WaitMembers(2)
	c.waitPeers()
	require.Eventually(t, func() bool {
		return h.e.state().secondary == b.c.Name()
	}, clustertest.Timeout, 10*time.Millisecond)
	h2, v := mustGet(t, a, h.ID(), "v")
	require.Equal(t, "alone", v)
	require.Equal(t, b.s.NodeID(), h2.Route().Secondary)
	require.NotEqual(t, h.ID(), h2.ID())
	require.Equal(t, "alone", string(b.s.lookup(h.e.key).state().attrs.val("v")))
}
