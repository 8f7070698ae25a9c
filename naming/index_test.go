package naming

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
)

// TestIndexModel applies random batches of binds, rebinds and unbinds to
// an index and to a map, and checks after each batch that they agree and
// that every table is within its load limit, while readers look names
// up concurrently (for the race detector).
func TestIndexModel(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	var x index
	model := map[string]*entry{}
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("n/%d", i)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				if e, ok := x.get(names[i%len(names)]); ok && e.b.Name != names[i%len(names)] {
					t.Errorf("get(%q) returned %q", names[i%len(names)], e.b.Name)
					return
				}
			}
		})
	}
	defer wg.Wait()
	defer stop.Store(true)
	for round := range 300 {
		var batch []indexChange
		n := 1 + rng.IntN(50)
		if round%50 == 0 {
			n = 3000 // a large batch: tables grow, or shrink after unbinds
		}
		unbind := round%100 >= 60 // phases of mostly unbinding
		for range n {
			name := names[rng.IntN(len(names))]
			var e *entry
			if !unbind || rng.IntN(10) == 0 {
				e = &entry{b: Binding{Name: name}}
			}
			batch = append(batch, indexChange{name: name, e: e})
			if e == nil {
				delete(model, name)
			} else {
				model[name] = e
			}
		}
		x.apply(batch)
		total := 0
		for s := range x.shards {
			tb := x.shards[s].Load()
			if tb == nil {
				continue
			}
			used := 0
			for _, sl := range tb.slots {
				if sl.e != nil {
					used++
					if sl.hash%indexShards != uint64(s) {
						t.Fatalf("%q in shard %d", sl.e.b.Name, s)
					}
				}
			}
			require.Equal(t, tb.n, used)
			require.LessOrEqual(t, used, len(tb.slots)*3/4)
			total += used
		}
		require.Equal(t, len(model), total)
		for _, name := range names {
			e, ok := x.get(name)
			if want, bound := model[name]; ok != bound || e != want {
				t.Fatalf("round %d: get(%q) = %p, %v; want %p, %v", round, name, e, ok, want, bound)
			}
		}
	}
}

// TestIndexCollisions fills one table with names whose home slots
// collide, then deletes them in random orders: every remaining name
// stays reachable.
func TestIndexCollisions(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		tb := &table{slots: make([]slot, minTable*4)}
		var in []slot
		for i := range len(tb.slots) * 3 / 4 {
			// Few distinct home slots, and the end of the table wraps.
			h := uint64(rng.IntN(4)+len(tb.slots)-2) << indexShardBits
			s := slot{hash: h, e: &entry{b: Binding{Name: fmt.Sprint(i)}}}
			tb.set(s)
			in = append(in, s)
		}
		rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
		for k, s := range in {
			tb.delete(s.hash, s.e.b.Name)
			require.Equal(t, len(in)-k-1, tb.n)
			for _, r := range in[k+1:] {
				require.True(t, tb.has(r.hash, r.e.b.Name), "%q lost after deleting %q", r.e.b.Name, s.e.b.Name)
			}
			require.False(t, tb.has(s.hash, s.e.b.Name))
		}
	}
}

func (t *table) has(h uint64, name string) bool {
	mask := uint64(len(t.slots) - 1)
	for i := h >> indexShardBits; ; i++ {
		s := &t.slots[i&mask]
		if s.e == nil {
			return false
		}
		if s.hash == h && s.e.b.Name == name {
			return true
		}
	}
}

// TestLookupNames: Lookup trims one leading and one trailing slash, tells
// an invalid name from an unbound one, and finds nothing for a name that
// normalises to another.
func TestLookupNames(t *testing.T) {
	t.Parallel()
	tc := clustertest.Start(t, 1, noFaults)
	tr := newTree(t, tc.Nodes[0], Options{})
	require.NoError(t, tr.Bind(context.Background(), "ejb/Orders", []byte("v")))
	for _, n := range []string{"ejb/Orders", "/ejb/Orders", "ejb/Orders/", "/ejb/Orders/"} {
		b, err := tr.Lookup(n)
		require.NoError(t, err, n)
		require.Equal(t, "ejb/Orders", b.Name)
	}
	for _, n := range []string{"", "/", "//ejb/Orders", "ejb/Orders//", "ejb//Orders", "ejb/./Orders", "ejb/Orders?"} {
		_, err := tr.Lookup(n)
		require.ErrorIs(t, err, ErrInvalidName, "%q", n)
	}
	for _, n := range []string{"ejb", "ejb/orders", "ejb/Orders/x"} {
		_, err := tr.Lookup(n)
		require.ErrorIs(t, err, ErrNotFound, "%q", n)
	}
}
