package naming

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// bindSome binds n node-scoped names under prefix on tr, a clusterable
// offer, and a cluster-scoped name.
func bindSome(t *testing.T, tr *Tree, prefix string, n int) {
	t.Helper()
	c := ctx(t)
	for i := range n {
		require.NoError(t, tr.Bind(c, fmt.Sprintf("%s/n%d", prefix, i), []byte(fmt.Sprintf("%s-%d", tr.self, i))))
	}
	require.NoError(t, tr.Rebind(c, "shared/svc", []byte(tr.self), Clusterable()))
	require.NoError(t, tr.Rebind(c, "cluster/"+prefix, []byte(tr.self), WithScope(ClusterScope)))
}

// A node that joins late receives the whole tree.
func TestConvergeLateJoiner(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 3)
	for i, tr := range tc.trees {
		bindSome(t, tr, fmt.Sprintf("p%d", i), 200)
	}
	want := converged(t, tc.trees)
	require.Equal(t, 3*200+1+3, tc.trees[0].Len())

	late := tc.addNode()
	tc.WaitMembers(4)
	eventually(t, []*Tree{late}, "late joiner has the tree", func(tr *Tree) bool { return treeDigest(tr) == want })
	// And what it binds reaches the others.
	bindSome(t, late, "p3", 10)
	converged(t, tc.trees)
	assert.True(t, bound(tc.trees[0], "shared/svc", "node-0=node-0", "node-1=node-1", "node-2=node-2", "node-3=node-3"))
}

// Two sides of a partition change the tree independently; when the
// partition heals, every node converges to the same tree: every live
// node's bindings, and the last write of each cluster-scoped name.
func TestConvergeAfterPartitionHeals(t *testing.T) {
	t.Parallel()
	tc := startTreesOn(t, 5)
	c := ctx(t)
	for i, tr := range tc.trees {
		require.NoError(t, tr.Bind(c, fmt.Sprintf("before/%d", i), []byte("x")))
	}
	require.NoError(t, tc.trees[0].Bind(c, "cluster/shared", []byte("first"), WithScope(ClusterScope)))
	converged(t, tc.trees)

	left, right := []int{0, 1}, []int{2, 3, 4}
	start := time.Now()
	tc.Net.Partition(tc.Hosts(left...), tc.Hosts(right...))
	clustertest.WaitMembers(t, []*membership.Cluster{tc.Nodes[0], tc.Nodes[1]}, 2)
	clustertest.WaitMembers(t, []*membership.Cluster{tc.Nodes[2], tc.Nodes[3], tc.Nodes[4]}, 3)
	eventually(t, tc.trees[:2], "left side dropped the right side's bindings", func(tr *Tree) bool { return bound(tr, "before/3") })
	t.Logf("partition detected in %s", time.Since(start))

	for _, i := range left {
		bindSome(t, tc.trees[i], fmt.Sprintf("left%d", i), 20)
	}
	for _, i := range right {
		bindSome(t, tc.trees[i], fmt.Sprintf("right%d", i), 20)
	}
	require.NoError(t, tc.trees[1].Unbind(c, "before/1"))
	require.NoError(t, tc.trees[3].Unbind(c, "cluster/shared"))
	// The two sides share no clock: writes in one millisecond are ordered
	// by their logical counters, not by real time. A few milliseconds
	// apart, the later write has the later timestamp.
	time.Sleep(5 * time.Millisecond)
	require.NoError(t, tc.trees[0].Rebind(c, "cluster/shared", []byte("left wins: written last"), WithScope(ClusterScope)))

	start = time.Now()
	tc.Net.Heal()
	tc.WaitMembers(5)
	t.Logf("members merged %s after the heal", time.Since(start))
	d := converged(t, tc.trees)
	t.Logf("trees converged to %s %s after the heal", d, time.Since(start))
	tr := tc.trees[4]
	assert.True(t, bound(tr, "cluster/shared", "node-0=left wins: written last"), dump(tr))
	assert.True(t, bound(tr, "before/1"), dump(tr))
	assert.True(t, bound(tr, "before/0", "node-0=x"))
	assert.True(t, bound(tr, "left1/n3", "node-1=node-1-3"))
	assert.True(t, bound(tc.trees[0], "right4/n19", "node-4=node-4-19"))
	assert.True(t, bound(tr, "shared/svc", "node-0=node-0", "node-1=node-1", "node-2=node-2", "node-3=node-3", "node-4=node-4"))
	assert.Equal(t, 4+5*20+1+5+1, tr.Len(), "before/* less one, left/right names, shared/svc, cluster/* and cluster/shared")
}
