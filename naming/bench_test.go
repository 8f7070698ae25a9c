package naming

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// benchName is the i-th name of a benchmark tree: three levels, like
// "svc/g17/name-01234".
func benchName(i int) string { return fmt.Sprintf("svc/g%d/name-%05d", i%100, i) }

// fill binds n names on tr from several goroutines (so that the loop
// batches them).
func fill(tb testing.TB, tr *Tree, n int) {
	tb.Helper()
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := tr.Bind(context.Background(), benchName(i), []byte("http://10.0.0.1:8080/x")); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Equal(tb, n, tr.Len())
}

// BenchmarkLookup: a lookup in a tree of 100,000 bindings, alone, while
// another goroutine rebinds a name every millisecond, and while it
// rebinds as fast as it can; of 4096 random names (memory-latency bound)
// or of 64 (cache-resident). allocs/op counts the whole process, the
// binder's allocations included.
func BenchmarkLookup(b *testing.B) {
	const size = 100_000
	tc := clustertest.Start(b, 1, noFaults)
	tr := newTree(b, tc.Nodes[0], Options{})
	fill(b, tr, size)
	names := make([]string, 4096)
	for i := range names {
		names[i] = benchName(rand.IntN(size))
	}
	// The reference, in the same run: a plain Go map of the same 100,000
	// names, read with the same 4096 random keys (prebuilt strings, not
	// the map's own, as for Lookup). No replicated tree can beat the
	// memory latency this measures; Lookup does more: it reads the entry
	// and copies out a 56-byte Binding where the map returns a slice
	// header stored in place. The reference is also measured while the
	// binder runs flat out, which shows what sharing two cores with the
	// binder and the tree's loop costs any reader.
	ref := make(map[string][]byte, size)
	for i := range size {
		ref[benchName(i)] = []byte("http://10.0.0.1:8080/x")
	}
	for _, bc := range []struct {
		name  string
		every time.Duration // binder pause; < 0: no binder
		hot   int           // how many distinct names are looked up
		ref   bool          // read the reference map instead of the tree
	}{
		{"reference-go-map", -1, 4096, true},
		{"idle", -1, 4096, false},
		{"binder-1ms", time.Millisecond, 4096, false},
		{"binder-max", 0, 4096, false},
		{"reference-go-map-binder-max", 0, 4096, true},
		{"hot64-binder-1ms", time.Millisecond, 64, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			stop := make(chan struct{})
			var writes atomic.Int64
			var wg sync.WaitGroup
			if bc.every >= 0 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if err := tr.Rebind(context.Background(), benchName(i%size), []byte(fmt.Sprint(i))); err != nil {
							b.Error(err)
							return
						}
						writes.Add(1)
						if bc.every > 0 {
							time.Sleep(bc.every) // the binder's pace
						}
					}
				})
			}
			b.ReportAllocs()
			start := time.Now()
			if bc.ref {
				for i := 0; b.Loop(); i++ {
					if ref[names[i%bc.hot]] == nil {
						b.Fatal("missing")
					}
				}
			} else {
				for i := 0; b.Loop(); i++ {
					if _, err := tr.Lookup(names[i%bc.hot]); err != nil {
						b.Fatal(err)
					}
				}
			}
			close(stop)
			wg.Wait()
			b.ReportMetric(float64(writes.Load())/time.Since(start).Seconds(), "binds/s")
		})
	}
}

// BenchmarkSelect: round-robin selection among the 3 offers of a
// clusterable name, in a tree of 100,000 bindings.
func BenchmarkSelect(b *testing.B) {
	tc := clustertest.Start(b, 3, noFaults)
	tc.WaitMembers(3)
	var trees []*Tree
	for _, n := range tc.Nodes {
		trees = append(trees, newTree(b, n, Options{}))
	}
	fill(b, trees[0], 100_000)
	for _, tr := range trees {
		require.NoError(b, tr.Bind(context.Background(), "svc/orders", []byte(tr.self), Clusterable()))
	}
	eventually(b, trees[:1], "three offers", func(tr *Tree) bool {
		x, err := tr.Lookup("svc/orders")
		return err == nil && len(x.Offers) == 3 && len(*tr.members.Load()) == 3
	})
	// The other trees of this process receive the 100,000 bindings
	// meanwhile: wait, so as not to measure Select against their sync.
	eventually(b, trees, "the whole tree everywhere", func(tr *Tree) bool { return tr.Len() == 100_001 })
	for _, p := range []struct {
		name string
		p    Policy
	}{{"RoundRobin", RoundRobin()}, {"Weighted", Weighted()}, {"PreferLocal", PreferLocal(RoundRobin())}, {"WithRole", WithRole("", RoundRobin())}} {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := trees[0].Select("svc/orders", p.p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIndexApply: the cost of publishing one change in the
// exact-name index of 100,000 bindings (what a Bind, Rebind or Unbind
// adds to the update of the radix tree): alternately the unbind of a
// random name and its bind.
func BenchmarkIndexApply(b *testing.B) {
	const size = 100_000
	var x index
	changes := make([]indexChange, size)
	for i := range changes {
		n := benchName(i)
		changes[i] = indexChange{name: n, e: &entry{b: Binding{Name: n}}}
	}
	x.apply(changes)
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	var ch indexChange
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			ch = changes[rng.IntN(size)]
			x.apply([]indexChange{{name: ch.name}})
		} else {
			x.apply([]indexChange{ch})
		}
	}
}

// BenchmarkMemoryPerBinding reports the heap a node holds per binding
// (records, indexes, the read tree and the exact-name index), measured
// on the core of a tree of 100,000 bindings.
func BenchmarkMemoryPerBinding(b *testing.B) {
	const size = 100_000
	opts, err := Options{Logger: slog.New(slog.DiscardHandler)}.withDefaults()
	require.NoError(b, err)
	names := make([]string, size)
	values := make([][]byte, size)
	for i := range names {
		names[i] = benchName(i)
		values[i] = []byte("http://10.0.0.1:8080/x")
	}
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := newCore("node-0", 1, opts, time.Now, &counters{}, 1100)
		x := new(index)
		publish := func() { // as Tree.publish does
			c.flush()
			x.apply(c.changed)
			c.changed = c.changed[:0]
		}
		for i := range names {
			if err := c.local(opBind, names[i], values[i], bindOptions{}); err != nil {
				b.Fatal(err)
			}
			c.out = c.out[:0]
			if i%1000 == 0 {
				publish()
			}
		}
		publish()
		c.out = nil
		c.events = nil
		c.changed = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/size, "B/binding")
		b.ReportMetric(float64(len(names[0])+len(values[0])), "payload-B")
		runtime.KeepAlive(c)
		runtime.KeepAlive(x)
	}
}

// TestBenchJoinSync measures how long a new node takes to receive a tree
// of 100,000 bindings, and the bytes it took. TROUPE_BENCH=1 runs it.
func TestBenchJoinSync(t *testing.T) {
	if os.Getenv("TROUPE_BENCH") == "" {
		t.Skip("set TROUPE_BENCH=1 to run the join-sync measurement")
	}
	const size = 100_000
	tc := clustertest.Start(t, 1, noFaults)
	src := newTree(t, tc.Nodes[0], Options{})
	fill(t, src, size)
	before := src.Stats()
	start := time.Now()
	node := tc.Add(func(c *membership.Config) { c.WellKnown, c.Faults = []string{tc.Nodes[0].Addr()}, nil })
	joined := time.Since(start)
	tr := newTree(t, node, Options{})
	synced := time.Now()
	eventually(t, []*Tree{tr}, "synced", func(tr *Tree) bool { return tr.Len() == size })
	took := time.Since(synced)
	after := src.Stats()
	s := tr.Stats()
	t.Logf("join sync of %d bindings: membership join %s, tree sync %s after New; %d bytes sent by the source (%.1f B/binding), %d bytes received, %d fetches",
		size, joined.Round(time.Millisecond), took.Round(time.Millisecond), after.BytesOut-before.BytesOut,
		float64(after.BytesOut-before.BytesOut)/size, s.BytesIn, s.Fetches)
}

// TestBenchPropagation measures, for N = 10, 50 and 100 nodes, the time
// until a Bind on one node is visible on every node, against a raw
// membership broadcast (the same gossip, relayed the same way) sent in
// the same run. TROUPE_BENCH=1 runs it; TROUPE_BENCH_SIZES overrides the
// sizes ("10,50").
func TestBenchPropagation(t *testing.T) {
	if os.Getenv("TROUPE_BENCH") == "" {
		t.Skip("set TROUPE_BENCH=1 to run the propagation measurement")
	}
	sizes := []int{10, 50, 100}
	if s := os.Getenv("TROUPE_BENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range splitComma(s) {
			var n int
			fmt.Sscan(f, &n)
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) { propagation(t, n) })
	}
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func propagation(t *testing.T, n int) {
	const rounds = 10
	tc := clustertest.Start(t, n, noFaults)
	tc.WaitMembers(n)
	trees := make([]*Tree, n)
	for i, node := range tc.Nodes {
		trees[i] = newTree(t, node, Options{})
	}
	// Raw broadcasts: every node records when each message arrives.
	var mu sync.Mutex
	arrived := map[string]int{}
	done := map[string]chan struct{}{}
	chans := make([]*membership.Channel, n)
	for i, node := range tc.Nodes {
		ch, err := node.Channel("rawbench", membership.HandlerFuncs{Message: func(_ string, msg []byte) {
			mu.Lock()
			defer mu.Unlock()
			arrived[string(msg)]++
			if arrived[string(msg)] == n-1 {
				close(done[string(msg)])
			}
		}})
		require.NoError(t, err)
		t.Cleanup(ch.Close)
		chans[i] = ch
	}
	// Naming: a watcher per node reports when each name appears.
	seen := map[string]int{}
	ndone := map[string]chan struct{}{}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // cleanups run last-registered first: cancel, then wait
	wctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, tr := range trees[1:] {
		w, err := tr.Watch(wctx, "bench")
		require.NoError(t, err)
		wg.Go(func() {
			for ev := range w.Events() {
				if ev.Type != EventBound {
					continue
				}
				mu.Lock()
				seen[ev.Name]++
				if seen[ev.Name] == n-1 {
					close(ndone[ev.Name])
				}
				mu.Unlock()
			}
		})
	}
	limit := 30 * time.Second
	var raw, nam []time.Duration
	rawLost, namLost := 0, 0
	for r := range rounds {
		src := r % n
		msg := fmt.Sprintf("raw-%d", r)
		mu.Lock()
		done[msg] = make(chan struct{})
		mu.Unlock()
		start := time.Now()
		require.NoError(t, chans[src].Broadcast([]byte(msg)))
		select {
		case <-done[msg]:
			raw = append(raw, time.Since(start))
		case <-time.After(limit):
			rawLost++
		}
		name := fmt.Sprintf("bench/%d", r)
		mu.Lock()
		ndone[name] = make(chan struct{})
		mu.Unlock()
		if src == 0 {
			src = 1
		}
		start = time.Now()
		require.NoError(t, trees[src].Bind(context.Background(), name, []byte("v")))
		// The binding node's own watcher is not counted: wait for the others
		// (n-1, node 0 included when src != 0).
		select {
		case <-ndone[name]:
			nam = append(nam, time.Since(start))
		case <-time.After(limit):
			namLost++
		}
	}
	med := func(d []time.Duration) time.Duration {
		if len(d) == 0 {
			return 0
		}
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	p90 := func(d []time.Duration) time.Duration {
		if len(d) == 0 {
			return 0
		}
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)*9/10]
	}
	t.Logf("N=%d: raw broadcast to all: median %s p90 %s (%d/%d not everywhere within %s); naming bind visible everywhere: median %s p90 %s (%d/%d not within %s); median ratio %.2f",
		n, med(raw).Round(time.Millisecond), p90(raw).Round(time.Millisecond), rawLost, rounds, limit,
		med(nam).Round(time.Millisecond), p90(nam).Round(time.Millisecond), namLost, rounds, limit,
		float64(med(nam))/float64(max(med(raw), 1)))
}
