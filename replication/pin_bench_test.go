package replication

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/membership"
)

// BenchmarkPinOwner: Owner of a pinned key, against the naming Lookup it
// is built on (with the name already built) in the same run.
//
//	go test -run '^$' -bench BenchmarkPinOwner -benchmem -count 6 ./replication/
func BenchmarkPinOwner(b *testing.B) {
	nodes := startPins(b, 1)
	ctx := testCtx(b)
	const keys = 1000
	for i := range keys {
		_, err := nodes[0].pins.Pin(ctx, fmt.Sprintf("cart/%d", i))
		require.NoError(b, err)
	}
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("cart/%d", i)
	}
	full := make([]string, keys)
	for i := range full {
		full[i] = nodes[0].pins.name(names[i])
	}
	b.Run("reference=naming.Lookup", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := nodes[0].tree.Lookup(full[i%keys]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("Owner", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := nodes[0].pins.Owner(names[i%keys]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkPin: the latency of pinning a new key from one node of N,
// against its floor measured in the same run, turn by turn: one parallel
// round of a request and an answer with every other member over a
// membership channel (what a confirmed bind costs at least). Each
// iteration does one round and one Pin; the metrics are their medians and
// the ratio of the medians. A round whose answers do not all come within
// a second (memberlist gave up a connection under load) is counted as
// lost, not measured.
//
//	go test -run '^$' -bench BenchmarkPin/ -benchtime 1000x -count 3 ./replication/
func BenchmarkPin(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			nodes := startPins(b, n)
			ctx := context.Background() // runs may take longer than a test's timeout
			echo := newEchoRound(b, nodes)
			var rounds, pins []time.Duration
			lost, next := 0, 0
			for b.Loop() {
				if d, ok := echo.round(ctx); ok {
					rounds = append(rounds, d)
				} else {
					lost++
				}
				next++
				start := time.Now()
				if _, err := nodes[0].pins.Pin(ctx, fmt.Sprintf("k/%d", next)); err != nil {
					b.Fatal(err)
				}
				pins = append(pins, time.Since(start))
			}
			r, p := median(rounds), median(pins)
			b.ReportMetric(float64(r.Microseconds()), "round-µs")
			b.ReportMetric(float64(p.Microseconds()), "pin-µs")
			b.ReportMetric(float64(p)/float64(r), "pin/round")
			b.ReportMetric(float64(lost), "lost-rounds")
		})
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// echoRound sends a message from node 0 to every other node over a
// membership channel and waits for all the answers.
type echoRound struct {
	chans []*membership.Channel
	peers []string
	got   chan uint64
	id    uint64
}

type echoHandler struct {
	e    *echoRound
	self int
	wg   *sync.WaitGroup
}

func (h echoHandler) HandleMessage(from string, msg []byte) {
	if h.self == 0 {
		if len(msg) == 8 {
			h.e.got <- binary.BigEndian.Uint64(msg)
		}
		return
	}
	h.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.e.chans[h.self].Send(ctx, from, msg)
	})
}
func (echoHandler) LocalState(bool) []byte                { return nil }
func (echoHandler) MergeRemoteState(string, []byte, bool) {}

func newEchoRound(tb testing.TB, nodes []*pinNode) *echoRound {
	e := &echoRound{got: make(chan uint64, 4*len(nodes))}
	var wg sync.WaitGroup
	tb.Cleanup(wg.Wait)
	for i, n := range nodes {
		ch, err := n.c.Channel("bench.echo", echoHandler{e: e, self: i, wg: &wg})
		require.NoError(tb, err)
		tb.Cleanup(ch.Close)
		e.chans = append(e.chans, ch)
		if i > 0 {
			e.peers = append(e.peers, n.name())
		}
	}
	return e
}

// round runs one round and reports its duration, or false if some answer
// did not come within a second.
func (e *echoRound) round(ctx context.Context) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	e.id++
	msg := binary.BigEndian.AppendUint64(nil, e.id)
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range e.peers {
		wg.Go(func() { _ = e.chans[0].Send(ctx, p, msg) })
	}
	wg.Wait()
	for n := 0; n < len(e.peers); {
		select {
		case id := <-e.got:
			if id == e.id { // a late answer of a lost round is not counted
				n++
			}
		case <-ctx.Done():
			return 0, false
		}
	}
	return time.Since(start), true
}

// TestBenchSingletonHandover measures how long a singleton is down when
// its node crashes and when it leaves, against the same-run references:
// failure detection (kill until the first member reports the failure) for
// the crash, and the spread of a naming Unbind to every other member for
// the leave (the hand-over is an Unbind seen, then a confirmed Bind).
//
//	TROUPE_BENCH=1 go test -run TestBenchSingletonHandover -v ./replication/
func TestBenchSingletonHandover(t *testing.T) {
	if os.Getenv("TROUPE_BENCH") == "" {
		t.Skip("a benchmark: set TROUPE_BENCH=1")
	}
	const rounds = 3
	nodes := startPins(t, 2*rounds+2)
	ctx := testCtx(t)
	probe := newProbe()
	_, byName := probe.register(t, nodes, "bench")
	cur := probe.next(t, probe.started, "start")
	live := func() []*pinNode {
		var out []*pinNode
		for _, n := range nodes {
			if !n.pins.isClosed() {
				out = append(out, n)
			}
		}
		return out
	}
	var crash, detect, leave, unbind []time.Duration
	for range rounds {
		victim := byName[cur.node]
		others := slices.DeleteFunc(live(), func(n *pinNode) bool { return n == victim })
		detected := failDetected(t, others, victim.name())
		killed := time.Now()
		victim.kill()
		probe.next(t, probe.stopped, "stop")
		next := probe.next(t, probe.started, "restart")
		det := <-detected
		crash = append(crash, next.at.Sub(killed))
		detect = append(detect, det.Sub(killed))
		cur = next
	}
	for range rounds {
		// Reference: an Unbind's spread, from the node that will leave.
		owner := byName[cur.node]
		others := slices.DeleteFunc(live(), func(n *pinNode) bool { return n == owner })
		require.NoError(t, owner.tree.Bind(ctx, "bench/ref", nil))
		require.Eventually(t, func() bool { return allSee(others, "bench/ref", true) }, time.Minute, time.Millisecond)
		start := time.Now()
		require.NoError(t, owner.tree.Unbind(ctx, "bench/ref"))
		require.Eventually(t, func() bool { return allSee(others, "bench/ref", false) }, time.Minute, time.Millisecond)
		unbind = append(unbind, time.Since(start))

		require.NoError(t, owner.pins.Leave(ctx))
		stop := probe.next(t, probe.stopped, "stop on leave")
		next := probe.next(t, probe.started, "start after leave")
		leave = append(leave, next.at.Sub(stop.at))
		cur = next
	}
	t.Logf("crash: down %v (samples %v), failure detection %v (samples %v), ratio %.3f",
		median(crash), crash, median(detect), detect, float64(median(crash))/float64(median(detect)))
	t.Logf("leave: gap %v (samples %v), Unbind spread %v (samples %v), ratio %.2f",
		median(leave), leave, median(unbind), unbind, float64(median(leave))/float64(median(unbind)))
	require.Equal(t, int32(1), probe.max.Load())
}

func allSee(nodes []*pinNode, name string, bound bool) bool {
	for _, n := range nodes {
		if _, err := n.tree.Lookup(name); (err == nil) != bound {
			return false
		}
	}
	return true
}
