package pins

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// singletonProbe records where a singleton runs: how many instances run
// at once (never more than one), and each start and stop.
type singletonProbe struct {
	running atomic.Int32
	max     atomic.Int32
	mu      sync.Mutex
	starts  []singletonRun
	now     map[singletonRun]bool // the instances running now (at zeroed)
	stopped chan singletonRun
	started chan singletonRun
}

type singletonRun struct {
	node  string
	token uint64
	at    time.Time
}

func newProbe() *singletonProbe {
	return &singletonProbe{started: make(chan singletonRun, 64), stopped: make(chan singletonRun, 64), now: map[singletonRun]bool{}}
}

func (p *singletonProbe) fn(node string) SingletonFunc {
	return func(ctx context.Context, token uint64) {
		n := p.running.Add(1)
		for {
			m := p.max.Load()
			if n <= m || p.max.CompareAndSwap(m, n) {
				break
			}
		}
		run := singletonRun{node: node, token: token, at: time.Now()}
		p.mu.Lock()
		p.starts = append(p.starts, run)
		p.now[singletonRun{node: node, token: token}] = true
		p.mu.Unlock()
		p.started <- run
		<-ctx.Done()
		p.mu.Lock()
		delete(p.now, singletonRun{node: node, token: token})
		p.mu.Unlock()
		p.running.Add(-1)
		p.stopped <- singletonRun{node: node, token: token, at: time.Now()}
	}
}

// register registers the singleton name on every node with the probe's
// function, and returns the registrations and the nodes by name. The
// registrations last until the test ends (not for one wait's timeout).
func (p *singletonProbe) register(t testing.TB, nodes []*pinNode, name string, opts ...SingletonOption) ([]*Singleton, map[string]*pinNode) {
	t.Helper()
	ctx := context.Background()
	var singles []*Singleton
	byName := map[string]*pinNode{}
	for _, n := range nodes {
		byName[n.name()] = n
		s, err := n.pins.RunSingleton(ctx, name, p.fn(n.name()), opts...)
		require.NoError(t, err)
		t.Cleanup(s.Stop)
		singles = append(singles, s)
	}
	return singles, byName
}

func (p *singletonProbe) next(t *testing.T, ch chan singletonRun, what string) singletonRun {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(clustertest.Timeout):
		t.Fatalf("no singleton %s", what)
		return singletonRun{}
	}
}

// failDetected returns a channel that receives when the first of nodes
// sees victim fail or leave.
func failDetected(t *testing.T, nodes []*pinNode, victim string) <-chan time.Time {
	out := make(chan time.Time, 1)
	var once sync.Once
	for _, n := range nodes {
		sub := n.c.Subscribe()
		t.Cleanup(sub.Close)
		go func() {
			for ev := range sub.Events() {
				if ev.Member.Name == victim && (ev.Type == membership.EventFail || ev.Type == membership.EventLeave) {
					once.Do(func() { out <- time.Now() })
					return
				}
			}
		}()
	}
	return out
}

// A singleton registered on 4 nodes runs on exactly one; when its node is
// killed it restarts on another within a second of failure detection;
// when its node leaves it moves with a short gap; its token grows each
// time; at no moment do two instances run.
func TestSingletonFailoverAndHandover(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 4)
	ctx := testCtx(t)
	probe := newProbe()
	_, byName := probe.register(t, nodes, "jms/orders")
	first := probe.next(t, probe.started, "start")
	for _, n := range nodes {
		require.Eventually(t, func() bool {
			pin, err := n.pins.Owner(SingletonKey("jms/orders"))
			return err == nil && pin.Owner == first.node && pin.Token == first.token
		}, clustertest.Timeout, 10*time.Millisecond)
	}

	// Crash: the others detect it, and one of them starts the singleton.
	victim := byName[first.node]
	var survivors []*pinNode
	for _, n := range nodes {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	detected := failDetected(t, survivors, victim.name())
	killedAt := time.Now()
	victim.kill()
	probe.next(t, probe.stopped, "stop on the killed node")
	second := probe.next(t, probe.started, "restart after the crash")
	var det time.Time
	select {
	case det = <-detected:
	case <-time.After(clustertest.Timeout):
		t.Fatal("failure never detected")
	}
	t.Logf("crash: detected after %v, restarted %v after detection (on %s)", det.Sub(killedAt), second.at.Sub(det), second.node)
	assert.NotEqual(t, first.node, second.node)
	assert.Greater(t, second.token, first.token)
	// Within failure detection plus the owner lease, which a claim waits
	// after a failure (plus slack for a loaded CI machine running the race
	// detector).
	assert.Less(t, second.at.Sub(det), DefaultOwnerLease+2*time.Second)

	// Graceful leave: the owner stops its instance first, then another
	// starts it.
	owner := byName[second.node]
	require.NoError(t, owner.pins.Leave(ctx))
	stop := probe.next(t, probe.stopped, "stop on leave")
	third := probe.next(t, probe.started, "start after the leave")
	t.Logf("leave: gap %v (on %s)", third.at.Sub(stop.at), third.node)
	assert.NotEqual(t, second.node, third.node)
	assert.Greater(t, third.token, second.token)
	assert.Less(t, third.at.Sub(stop.at), 3*time.Second)
	assert.Equal(t, int32(1), probe.max.Load(), "two instances ran at once")
	assert.Equal(t, int32(1), probe.running.Load())
}

// With PreferRole, a node of that role runs the singleton, and when it
// goes the next one of that role takes over before any other.
func TestSingletonPreferRole(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 4, func(i int, c *membership.Config) {
		if i >= 2 {
			c.Role = "worker"
		}
	})
	probe := newProbe()
	singles, _ := probe.register(t, nodes, "cron", PreferRole("worker"))
	first := probe.next(t, probe.started, "start")
	assert.Contains(t, []string{nodes[2].name(), nodes[3].name()}, first.node)
	idx := 2
	if first.node == nodes[3].name() {
		idx = 3
	}
	singles[idx].Stop()
	second := probe.next(t, probe.started, "start after Stop")
	assert.Equal(t, nodes[5-idx].name(), second.node, "the other worker should take over")
	assert.False(t, singles[idx].Running())
	assert.True(t, singles[5-idx].Running())
	assert.Equal(t, int32(1), probe.max.Load())
}

// A singleton whose registering context ends stops, and a second
// registration of the same name on one node is refused.
func TestSingletonContextAndDuplicate(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 1)
	probe := newProbe()
	ctx, cancel := context.WithCancel(testCtx(t))
	s, err := nodes[0].pins.RunSingleton(ctx, "solo", probe.fn("node-0"))
	require.NoError(t, err)
	probe.next(t, probe.started, "start")
	_, err = nodes[0].pins.RunSingleton(testCtx(t), "solo", probe.fn("node-0"))
	require.ErrorIs(t, err, ErrInvalidOptions)
	cancel()
	probe.next(t, probe.stopped, "stop when the context ends")
	s.Stop()
	assert.False(t, s.Running())
}

// A partition puts the singleton's node on the minority side: there it
// stops (no quorum), the majority side starts it with a larger token, and
// after the heal exactly one instance runs and every node agrees on its
// owner.
func TestSingletonPartitionMinorityStops(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 5)
	probe := newProbe()
	probe.register(t, nodes, "partitioned")
	first := probe.next(t, probe.started, "start")
	// The owner and one other node on one side, three on the other.
	var minority, majority []int
	for i, n := range nodes {
		if n.name() == first.node {
			minority = append(minority, i, (i+1)%len(nodes))
		}
	}
	for i := range nodes {
		if !slices.Contains(minority, i) {
			majority = append(majority, i)
		}
	}
	require.Len(t, minority, 2)
	tc := nodes[0].tc
	tc.Net.Partition(tc.Hosts(minority...), tc.Hosts(majority...))

	stop := probe.next(t, probe.stopped, "stop on the minority side")
	assert.Equal(t, first.node, stop.node)
	second := probe.next(t, probe.started, "start on the majority side")
	assert.Contains(t, names(nodes, majority), second.node)
	assert.Greater(t, second.token, first.token)

	// On a loaded machine failure detection may flap on the majority side
	// too, and stop and restart the singleton there; a node that regains
	// the quorum during the heal before it hears of the majority's pin may
	// claim it again, and then lose it to the earlier claim. What must
	// hold after the heal: every node agrees on the owner, and exactly one
	// instance runs, the owner's, with the owner's token.
	tc.Net.Heal()
	clustertest.WaitMembers(t, tc.Nodes, len(nodes))
	state := func() (string, bool) {
		var owner Pin
		agree := true
		desc := ""
		for i, n := range nodes {
			pin, err := n.pins.Owner(SingletonKey("partitioned"))
			desc += fmt.Sprintf("\n%s: owner %+v err %v members %d", n.name(), pin, err, n.c.NumMembers())
			if err != nil || (i > 0 && pin != owner) {
				agree = false
			}
			owner = pin
		}
		probe.mu.Lock()
		running := maps.Clone(probe.now)
		probe.mu.Unlock()
		desc += fmt.Sprintf("\nrunning %v", running)
		return desc, agree && len(running) == 1 && running[singletonRun{node: owner.Owner, token: owner.Token}]
	}
	deadline := time.Now().Add(clustertest.Timeout)
	for {
		desc, ok := state()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes do not agree on one running instance after the heal:%s", desc)
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	// Between the cut and the minority's detection of it both sides may
	// have run an instance (probe.max may be 2): that window is what the
	// tokens are for, and the majority's is the larger.
}

func names(nodes []*pinNode, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, nodes[i].name())
	}
	return out
}
