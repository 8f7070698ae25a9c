package naming

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
)

// startTreesWith starts n members (off the fault network) and a tree on
// each whose Options opts adjusts.
func startTreesWith(t *testing.T, n int, opts func(i int, o *Options)) *tcluster {
	t.Helper()
	tc := &tcluster{Cluster: clustertest.Start(t, n, noFaults), t: t}
	tc.WaitMembers(n)
	for i, node := range tc.Nodes {
		var o Options
		opts(i, &o)
		tc.trees = append(tc.trees, newTree(t, node, o))
	}
	return tc
}

// One member binding as much as it can does not fill the tree for the
// others: its own Binds are refused at its quota, and every other member
// can still bind, plain and confirmed (as Pin does).
func TestMemberQuotaLeavesRoomForOthers(t *testing.T) {
	t.Parallel()
	tc := startTreesWith(t, 3, func(_ int, o *Options) { o.MaxBindings = 40 })
	c := ctx(t)
	bound := 0
	for ; bound < 100; bound++ {
		if err := tc.trees[0].Bind(c, fmt.Sprintf("flood/%d", bound), nil); err != nil {
			require.ErrorIs(t, err, ErrQuota)
			require.ErrorIs(t, err, ErrTooLarge, "a quota is a kind of size limit")
			break
		}
	}
	require.Equal(t, 40/DefaultMemberShare, bound, "the default quota is a share of MaxBindings")
	eventually(t, tc.trees, "the flood everywhere", func(tr *Tree) bool {
		l, err := tr.List("flood")
		return err == nil && len(l) == bound
	})
	for i, tr := range tc.trees[1:] {
		for j := range 5 {
			require.NoError(t, tr.Bind(c, fmt.Sprintf("svc/%d/%d", i, j), nil), "member %d, bind %d", i+1, j)
		}
		require.NoError(t, tr.Bind(c, fmt.Sprintf("lock/%d", i), nil, Confirmed()))
	}
}

// A member that ignores its quota (configured with a larger one) binds
// past it; the other members keep only its quota's worth of its records,
// count the rest, and can all still bind.
func TestMemberOverQuotaDroppedElsewhere(t *testing.T) {
	t.Parallel()
	tc := startTreesWith(t, 3, func(i int, o *Options) {
		o.MaxBindings = 40
		if i == 0 {
			o.MaxBindings, o.MaxMemberBindings = 100, 100
		}
	})
	c := ctx(t)
	for i := range 30 {
		require.NoError(t, tc.trees[0].Bind(c, fmt.Sprintf("flood/%d", i), []byte("x")))
	}
	others := tc.trees[1:]
	eventually(t, others, "the others hold their quota's worth of the flood and count the rest", func(tr *Tree) bool {
		l, err := tr.List("flood")
		return err == nil && len(l) == 10 && tr.Stats().OverQuota > 0
	})
	for i, tr := range others {
		for j := range 9 { // and the lock below: its whole quota
			require.NoError(t, tr.Bind(c, fmt.Sprintf("svc/%d/%d", i, j), nil), "member %d, bind %d", i+1, j)
		}
		require.NoError(t, tr.Bind(c, fmt.Sprintf("lock/%d", i), nil, Confirmed()))
	}
	eventually(t, tc.trees, "every member's own bindings everywhere", func(tr *Tree) bool {
		l, err := tr.List("svc")
		return err == nil && len(l) == 2 && tr.Stats().Rejected == 0
	})
	for _, tr := range others {
		l, err := tr.List("flood")
		require.NoError(t, err)
		require.Len(t, l, 10, "no more of the flood later")
	}
}

// The quota charges cluster-scoped records to their last writer; a member
// over its quota can still unbind and rebind without growing, and its
// records from peers past the quota are dropped and counted.
func TestCoreMemberQuota(t *testing.T) {
	n := newNet(t, "a", "b")
	for _, c := range n.cores {
		c.opts.MaxMemberBindings, c.opts.MaxMemberBytes = 3, 20
	}
	for i := range 3 {
		require.NoError(t, n.bind("a", opBind, fmt.Sprintf("n/%d", i), "v"))
	}
	err := n.bind("a", opBind, "n/3", "v")
	require.ErrorIs(t, err, ErrQuota)
	err = n.bind("a", opRebind, "c/0", "v", WithScope(ClusterScope))
	require.ErrorIs(t, err, ErrQuota, "cluster-scoped records count against their writer")
	require.NoError(t, n.bind("a", opRebind, "n/0", "w"), "a rebind that does not grow")
	require.NoError(t, n.bind("a", opUnbind, "n/1", ""))
	require.NoError(t, n.bind("a", opRebind, "c/0", "v", WithScope(ClusterScope)))
	require.ErrorIs(t, n.bind("a", opRebind, "n/0", "a much longer value"), ErrQuota, "a rebind that grows")
	n.run()
	require.Equal(t, "a=w", n.lookup("b", "n/0"))
	require.Equal(t, "a=v", n.lookup("b", "c/0"))

	// b takes a's cluster-scoped record over: charged to b from then on.
	require.NoError(t, n.bind("b", opRebind, "c/0", "b", WithScope(ClusterScope)))
	n.run()
	require.Equal(t, usage{n: 2, b: 8}, n.cores["a"].usage["a"])
	require.Equal(t, usage{n: 1, b: 4}, n.cores["a"].usage["b"])

	// a with a larger quota floods; b keeps a's quota's worth.
	n.cores["a"].opts.MaxMemberBindings, n.cores["a"].opts.MaxMemberBytes = 100, 1000
	for i := range 5 {
		require.NoError(t, n.bind("a", opBind, fmt.Sprintf("m/%d", i), "v"))
	}
	n.run()
	require.Equal(t, 3, n.cores["b"].usage["a"].n, "b keeps one of the five")
	require.EqualValues(t, 4, n.stats["b"].overQuota.Load())
	// Unbinds free room on b too: full fetches repair what was dropped.
	for i := range 5 {
		require.NoError(t, n.bind("a", opUnbind, fmt.Sprintf("m/%d", i), ""))
	}
	n.pushPull("a", "b")
	n.advance(2 * beaconAgain)
	n.pushPull("a", "b")
	require.Equal(t, coreDigest(n.cores["a"]), coreDigest(n.cores["b"]))
}

func TestMemberQuotaOptions(t *testing.T) {
	o, err := Options{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, DefaultMaxBindings/DefaultMemberShare, o.MaxMemberBindings)
	require.Equal(t, int64(DefaultMaxTreeBytes/DefaultMemberShare), o.MaxMemberBytes)
	o, err = Options{MaxBindings: 2, MaxTreeBytes: 3}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, 1, o.MaxMemberBindings, "never a quota of nothing")
	require.Equal(t, int64(1), o.MaxMemberBytes)
	err = Options{MaxBindings: 10, MaxMemberBindings: 11, MaxMemberBytes: -1}.Validate()
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, "MaxMemberBindings")
	require.ErrorContains(t, err, "MaxMemberBytes")
}
