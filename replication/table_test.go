package replication

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAttrsWith checks the sorted-slice merge against a map model.
func TestAttrsWith(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string][]byte{}
	var a attrs
	for round := range 2000 {
		set := map[string][]byte{}
		var del []string
		for range rng.IntN(4) {
			set[fmt.Sprintf("k%02d", rng.IntN(30))] = []byte(fmt.Sprint(round))
		}
		for range rng.IntN(3) {
			del = append(del, fmt.Sprintf("k%02d", rng.IntN(30)))
		}
		before, snapshot := a, slices.Clone(a)
		a = a.with(attrsOf(set), del)
		require.Equal(t, snapshot, before, "with must not modify its receiver")
		for _, k := range del {
			delete(model, k)
		}
		maps.Copy(model, set)
		require.Equal(t, len(model), len(a))
		require.True(t, slices.IsSortedFunc(a, func(x, y attr) int {
			if x.k < y.k {
				return -1
			}
			return 1
		}))
		for k, v := range model {
			got, ok := a.get(k)
			require.True(t, ok)
			require.Equal(t, v, got)
		}
		require.Equal(t, model, a.toMap())
	}
	_, ok := a.get("missing")
	require.False(t, ok)
}
