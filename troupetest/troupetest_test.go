package troupetest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/troupetest"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

// memberNames returns the names node sees, sorted.
func memberNames(n *troupe.Node) []string {
	var out []string
	for _, m := range n.Cluster().Members() {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

// waitEvents reads sub until it has delivered an event of one of the
// given types about each of members, and returns the first such event's
// type for each member.
func waitEvents(t *testing.T, sub *membership.Subscription, members []string, types ...membership.EventType) map[string]membership.EventType {
	t.Helper()
	got := map[string]membership.EventType{}
	timeout := time.After(troupetest.DefaultTimeout)
	for len(got) < len(members) {
		select {
		case ev, ok := <-sub.Events():
			require.True(t, ok, "subscription closed: %v", sub.Err())
			_, done := got[ev.Member.Name]
			if !done && slices.Contains(members, ev.Member.Name) && slices.Contains(types, ev.Type) {
				got[ev.Member.Name] = ev.Type
			}
		case <-timeout:
			t.Fatalf("no %v events about all of %v: got %v", types, members, got)
		}
	}
	return got
}

// waitEvent is waitEvents for one member.
func waitEvent(t *testing.T, sub *membership.Subscription, member string, types ...membership.EventType) membership.EventType {
	t.Helper()
	return waitEvents(t, sub, []string{member}, types...)[member]
}

// A partition makes each side declare the other failed; Heal re-merges
// the cluster by itself.
func TestPartitionAndHeal(t *testing.T) {
	t.Parallel()
	tc := troupetest.Start(t, 4)
	left := tc.Node(0).Cluster().Subscribe()
	defer left.Close()
	right := tc.Node(3).Cluster().Subscribe()
	defer right.Close()

	tc.Partition([]int{0, 1}, []int{2, 3})
	tc.WaitMembers(2)
	assert.Equal(t, []string{"node-0", "node-1"}, memberNames(tc.Node(0)))
	assert.Equal(t, []string{"node-0", "node-1"}, memberNames(tc.Node(1)))
	assert.Equal(t, []string{"node-2", "node-3"}, memberNames(tc.Node(2)))
	assert.Equal(t, []string{"node-2", "node-3"}, memberNames(tc.Node(3)))
	failed := map[string]membership.EventType{"node-0": membership.EventFail, "node-1": membership.EventFail}
	assert.Equal(t, failed, waitEvents(t, right, []string{"node-0", "node-1"}, membership.EventFail, membership.EventLeave))
	failed = map[string]membership.EventType{"node-2": membership.EventFail, "node-3": membership.EventFail}
	assert.Equal(t, failed, waitEvents(t, left, []string{"node-2", "node-3"}, membership.EventFail, membership.EventLeave))
	assert.NotZero(t, tc.Network().Dropped(), "the cut dropped traffic")

	tc.Heal()
	tc.WaitMembers(4)
	waitEvent(t, left, "node-3", membership.EventJoin)
	waitEvent(t, right, "node-0", membership.EventJoin)
}

// Isolate cuts one node off from all the others, which still see each
// other.
func TestIsolate(t *testing.T) {
	t.Parallel()
	tc := troupetest.Start(t, 3)
	tc.Isolate(1)
	tc.WaitMembers(2, 0, 2)
	tc.WaitMembers(1, 1)
	assert.Equal(t, []string{"node-0", "node-2"}, memberNames(tc.Node(2)))
	tc.Heal()
	tc.WaitMembers(3)
}

// Cut separates one pair only: the failure detector's indirect probes
// through the third node keep everyone a member, and calls across the cut
// fail while calls around it work.
func TestCut(t *testing.T) {
	t.Parallel()
	tc := troupetest.Start(t, 3)
	chans := echoChannels(t, tc, nil)
	ctx := t.Context()
	_, err := chans[0].Call(ctx, "node-1", "echo", nil)
	require.NoError(t, err)

	tc.Cut(0, 1)
	_, err = chans[0].Call(ctx, "node-1", "echo", nil)
	require.ErrorIs(t, err, membership.ErrUnreachable)
	_, err = chans[0].Call(ctx, "node-2", "echo", nil)
	require.NoError(t, err)

	tc.Heal()
	_, err = chans[0].Call(ctx, "node-1", "echo", nil)
	require.NoError(t, err)
}

// echoChannels registers channel "troupetest" on every node; it answers
// every call with the caller's name. When seen is not nil, the handler
// reports there who called ("call from node-0") or sent what ("node-0
// sent a").
func echoChannels(t *testing.T, tc *troupetest.Cluster, seen chan<- string) []*membership.Channel {
	t.Helper()
	var out []*membership.Channel
	for _, n := range tc.Nodes() {
		ch, err := n.Cluster().Channel("troupetest", echo{seen})
		require.NoError(t, err)
		t.Cleanup(ch.Close)
		out = append(out, ch)
	}
	return out
}

type echo struct{ seen chan<- string }

func (echo) LocalState(bool) []byte                { return nil }
func (echo) MergeRemoteState(string, []byte, bool) {}

func (e echo) HandleMessage(from string, msg []byte) {
	if e.seen != nil {
		e.seen <- from + " sent " + string(msg)
	}
}

func (e echo) HandleCall(_ context.Context, from, _ string, _ []byte) ([]byte, error) {
	if e.seen != nil {
		e.seen <- "call from " + from
	}
	return []byte(from), nil
}

// Delay holds back the traffic between one pair: a message across it is
// overtaken by one sent later from a third node, and a call across it
// takes at least the delay in each direction. Heal lifts it.
func TestDelay(t *testing.T) {
	t.Parallel()
	const d = 500 * time.Millisecond
	tc := troupetest.Start(t, 3)
	seen := make(chan string, 16)
	chans := echoChannels(t, tc, seen)
	ctx := t.Context()
	// Open the connections before the delay, so that only the delay
	// tells the two messages below apart.
	for _, from := range []int{0, 2} {
		_, err := chans[from].Call(ctx, "node-1", "echo", nil)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("call from node-%d", from), <-seen)
	}

	tc.Delay(0, 1, d)
	sending := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		close(sending)
		sent <- chans[0].Send(ctx, "node-1", []byte("a")) // waits d
	}()
	<-sending
	require.NoError(t, chans[2].Send(ctx, "node-1", []byte("b")))
	assert.Equal(t, "node-2 sent b", <-seen, "b overtook a")
	assert.Equal(t, "node-0 sent a", <-seen)
	require.NoError(t, <-sent)

	start := time.Now()
	_, err := chans[0].Call(ctx, "node-1", "echo", nil)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 2*d, "the request and its answer each waited d")
	assert.Equal(t, "call from node-0", <-seen)

	tc.Heal()
	assert.Zero(t, tc.Network().Latency(tc.Host(0), tc.Host(1)))
	_, err = chans[0].Call(ctx, "node-1", "echo", nil)
	require.NoError(t, err)
	assert.Equal(t, "call from node-0", <-seen)
	tc.WaitMembers(3)
}

// Kill is a crash as peers see it: they declare the node failed. Add
// starts a node that joins the survivors; Leave is seen as a leave.
func TestKillAddLeave(t *testing.T) {
	t.Parallel()
	tc := troupetest.Start(t, 3)
	sub := tc.Node(0).Cluster().Subscribe()
	defer sub.Close()

	tc.Kill(1)
	tc.WaitMembers(2)
	assert.Equal(t, membership.EventFail, waitEvent(t, sub, "node-1", membership.EventFail, membership.EventLeave))
	assert.Equal(t, []string{"node-0", "node-2"}, memberNames(tc.Node(2)))

	n := tc.Add()
	tc.WaitMembers(3)
	assert.Equal(t, "node-3", n.Name())
	assert.Same(t, n, tc.Node(3))
	assert.Len(t, tc.Nodes(), 4)
	assert.True(t, strings.HasPrefix(n.Cluster().Addr(), tc.Host(3)+":"), n.Cluster().Addr())

	require.NoError(t, tc.Leave(3))
	tc.WaitMembers(2)
	assert.Equal(t, membership.EventLeave, waitEvent(t, sub, "node-3", membership.EventFail, membership.EventLeave))
}

// WithConfig reaches every node, those added later included; nodes of two
// clusters started by parallel tests never mix.
func TestWithConfig(t *testing.T) {
	t.Parallel()
	roles := troupetest.WithConfig(func(i int, c *troupe.Config) {
		c.Membership.Role = fmt.Sprintf("role-%d", i)
	})
	a := troupetest.Start(t, 2, roles)
	b := troupetest.Start(t, 2)
	a.Add()
	a.WaitMembers(3)
	b.WaitMembers(2)
	for i, n := range a.Nodes() {
		assert.Equal(t, fmt.Sprintf("role-%d", i), n.Cluster().LocalMember().Role)
	}
	assert.Empty(t, b.Node(0).Cluster().LocalMember().Role)
}

// A Network given by hand to membership nodes cuts them by IP address.
func TestNetworkWithMembership(t *testing.T) {
	t.Parallel()
	net := troupetest.NewNetwork()
	key := membership.GenerateKey()
	var nodes []*membership.Cluster
	for i := range 2 {
		cfg := membership.Config{
			SecretKeys:  [][]byte{key},
			ClusterName: "troupetest-network",
			NodeName:    fmt.Sprintf("m-%d", i),
			BindAddr:    fmt.Sprintf("127.0.0.%d:0", 20+i),
			Profile:     membership.ProfileLocal,
			Logger:      clustertest.Logger(t, fmt.Sprintf("m-%d", i)),
			Faults:      net,
		}
		if i > 0 {
			cfg.WellKnown = []string{nodes[0].Addr()}
		}
		c, err := membership.New(t.Context(), cfg)
		require.NoError(t, err)
		t.Cleanup(c.Shutdown)
		nodes = append(nodes, c)
	}
	clustertest.WaitMembers(t, nodes, 2)
	net.Cut("127.0.0.20", "127.0.0.21")
	clustertest.WaitMembers(t, nodes, 1)
	net.Heal()
	clustertest.WaitMembers(t, nodes, 2)

	var nilNet *troupetest.Network
	assert.False(t, nilNet.Drop("a", "b"))
	assert.Zero(t, nilNet.Latency("a", "b"))
}

// exampleT stands in for a *testing.T in examples, which have none: it
// drops logs, panics on Fatal and runs the cleanups when done.
type exampleT struct {
	testing.TB // nil: only the methods below are called
	cleanups   []func()
}

func newExampleT() *exampleT { return &exampleT{} }

func (*exampleT) Helper()                           {}
func (*exampleT) Name() string                      { return "Example" }
func (*exampleT) Log(...any)                        {}
func (*exampleT) Logf(string, ...any)               {}
func (*exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (t *exampleT) Cleanup(f func())                { t.cleanups = append(t.cleanups, f) }

func (t *exampleT) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
