package naming

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBindVisibleOnEveryNodeAndUnbind(t *testing.T) {
	tc := startTrees(t, 5)
	require.NoError(t, tc.trees[1].Bind(ctx(t), "ejb/OrderService", []byte("v1")))
	eventually(t, tc.trees, "bound everywhere", func(tr *Tree) bool { return bound(tr, "ejb/OrderService", "node-1=v1") })

	require.NoError(t, tc.trees[1].Rebind(ctx(t), "ejb/OrderService", []byte("v2")))
	eventually(t, tc.trees, "rebound everywhere", func(tr *Tree) bool { return bound(tr, "ejb/OrderService", "node-1=v2") })

	require.NoError(t, tc.trees[1].Unbind(ctx(t), "ejb/OrderService"))
	eventually(t, tc.trees, "unbound everywhere", func(tr *Tree) bool { return bound(tr, "ejb/OrderService") })
	converged(t, tc.trees)
}
