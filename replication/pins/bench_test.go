package pins

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/membership"
)

// BenchmarkPinOwner: Owner of a pinned key, against the naming Lookup it
// is built on (with the name already built) in the same run.
//
//	go test -run '^$' -bench BenchmarkPinOwner -benchmem -count 6 ./replication/pins/
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
// round of a request and an answer with every other member over the
// cluster's transport (what a confirmed bind costs at least). Each
// iteration does one round and one Pin; the metrics are their medians and
// the ratio of the medians. A round whose answers do not all come within
// a second (memberlist gave up a connection under load) is counted as
// lost, not measured.
//
//	go test -run '^$' -bench BenchmarkPin/ -benchtime 1000x -count 3 ./replication/pins/
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

// echoRound calls every other node from node 0 at once over a membership
// channel (the cluster's transport, which a Pin's confirmation rides too)
// and waits for all the answers: one parallel request/answer round.
type echoRound struct {
	ch    *membership.Channel
	peers []string
	msg   []byte
}

// echoHandler answers every call with its request.
type echoHandler struct{ membership.HandlerFuncs }

func (echoHandler) HandleCall(_ context.Context, _, _ string, req []byte) ([]byte, error) {
	return req, nil
}

func newEchoRound(tb testing.TB, nodes []*pinNode) *echoRound {
	e := &echoRound{msg: make([]byte, 64)}
	for i, n := range nodes {
		ch, err := n.c.Channel("bench.echo", echoHandler{})
		require.NoError(tb, err)
		tb.Cleanup(ch.Close)
		if i == 0 {
			e.ch = ch
		} else {
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
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, p := range e.peers {
		wg.Go(func() {
			if _, err := e.ch.Call(ctx, p, "echo", e.msg); err != nil {
				failed.Store(true)
			}
		})
	}
	wg.Wait()
	return time.Since(start), !failed.Load()
}

// TestBenchSingletonHandover measures how long a singleton is down when
// its node crashes and when it leaves, against the same-run references:
// failure detection (kill until the first member reports the failure) for
// the crash, and the spread of a naming Unbind to every other member for
// the leave (the hand-over is an Unbind seen, then a confirmed Bind).
//
//	TROUPE_BENCH=1 go test -run TestBenchSingletonHandover -v ./replication/pins/
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
