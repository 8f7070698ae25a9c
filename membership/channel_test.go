package membership_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// inbox records what a channel handler receives.
type inbox struct {
	mu     sync.Mutex
	msgs   map[string]string // msg -> from
	merged map[string]string // peer -> state
	state  string
}

func newInbox(state string) *inbox {
	return &inbox{msgs: map[string]string{}, merged: map[string]string{}, state: state}
}

func (b *inbox) handler() membership.Handler {
	return membership.HandlerFuncs{
		Message: func(from string, msg []byte) {
			b.mu.Lock()
			b.msgs[string(msg)] = from
			b.mu.Unlock()
		},
		State: func(bool) []byte { return []byte(b.state) },
		Merge: func(from string, state []byte, _ bool) {
			b.mu.Lock()
			b.merged[from] = string(state)
			b.mu.Unlock()
		},
	}
}

func (b *inbox) has(msg string) (from string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	from, ok = b.msgs[msg]
	return from, ok
}

func (b *inbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

// registerAll registers channel name on every node and returns each
// node's channel and inbox.
func registerAll(t *testing.T, tc *clustertest.Cluster, name string) ([]*membership.Channel, []*inbox) {
	chans := make([]*membership.Channel, len(tc.Nodes))
	boxes := make([]*inbox, len(tc.Nodes))
	for i, n := range tc.Nodes {
		boxes[i] = newInbox(fmt.Sprintf("state-of-%s", n.Name()))
		ch, err := n.Channel(name, boxes[i].handler())
		require.NoError(t, err)
		t.Cleanup(ch.Close)
		chans[i] = ch
	}
	return chans, boxes
}

// memberlist transmits a broadcast only from its sender; relaying makes
// every broadcast reach every node.
func TestChannelBroadcastReachesEveryNode(t *testing.T) {
	const n, msgs = 8, 20
	tc := clustertest.Start(t, n)
	tc.WaitMembers(n)
	chans, boxes := registerAll(t, tc, "test")
	_, err := tc.Nodes[0].Channel("test", membership.HandlerFuncs{})
	require.ErrorIs(t, err, membership.ErrChannelExists)

	sender := chans[0]
	for i := range msgs {
		require.NoError(t, sender.Broadcast([]byte(fmt.Sprintf("m%d", i))))
	}
	// Gossip is best effort: a node that no relayer happens to pick misses
	// a broadcast until the layer above repairs it by state exchange. With
	// relaying that is rare; without it (memberlist alone) a third of a
	// cluster this size misses each message. Allow one node in eight.
	complete := func() int {
		n := 0
		for _, b := range boxes[1:] {
			if b.count() == msgs {
				n++
			}
		}
		return n
	}
	if !assert.Eventually(t, func() bool { return complete() >= n-2 }, clustertest.Timeout, 20*time.Millisecond) {
		for i, b := range boxes {
			t.Logf("node-%d received %d, stats %+v", i, b.count(), tc.Nodes[i].Stats())
		}
		t.FailNow()
	}
	relayed := 0
	for _, node := range tc.Nodes[1:] {
		if node.Stats().Relayed > 0 {
			relayed++
		}
	}
	require.GreaterOrEqual(t, relayed, n-2, "receivers relay")
	var from string
	for _, b := range boxes[1:] {
		if f, ok := b.has("m7"); ok {
			from = f
		}
	}
	require.Equal(t, "node-0", from, "a relayed broadcast names its origin")
	require.Zero(t, boxes[0].count(), "the sender does not hear its own broadcast")

	big := make([]byte, sender.MaxBroadcast()+1)
	require.ErrorIs(t, sender.Broadcast(big), membership.ErrMessageTooLarge)
	require.NoError(t, sender.Broadcast(big[:sender.MaxBroadcast()]))
	require.Eventually(t, func() bool {
		for _, b := range boxes[1:] {
			if _, ok := b.has(string(big[:sender.MaxBroadcast()])); ok {
				return true
			}
		}
		return false
	}, clustertest.Timeout, 20*time.Millisecond, "the largest broadcast fits in a packet")
}

func TestChannelSendToOneNode(t *testing.T) {
	tc := clustertest.Start(t, 3)
	tc.WaitMembers(3)
	chans, boxes := registerAll(t, tc, "direct")
	ch := chans[0]
	large := string(make([]byte, 64<<10)) // far over a gossip packet
	require.NoError(t, ch.Send(context.Background(), "node-2", []byte(large)))
	require.Eventually(t, func() bool { _, ok := boxes[2].has(large); return ok }, clustertest.Timeout, 10*time.Millisecond)
	require.Zero(t, boxes[1].count())
	require.ErrorIs(t, ch.Send(context.Background(), "node-9", []byte("x")), membership.ErrUnknownMember)
}

// Each channel gets its own share of memberlist's push/pull exchange; a
// join runs one at once.
func TestChannelStateExchange(t *testing.T) {
	tc := clustertest.Start(t, 1)
	box0 := newInbox("state-of-node-0")
	_, err := tc.Nodes[0].Channel("anti-entropy", box0.handler())
	require.NoError(t, err)

	// Register before joining so the join's exchange carries the state.
	cfg := clustertest.Config(t, tc.Name, 1, tc.Net)
	cfg.WellKnown = []string{tc.Nodes[0].Addr()}
	box1 := newInbox("state-of-node-1")
	n1 := joinWithChannel(t, cfg, "anti-entropy", box1)
	clustertest.WaitMembers(t, []*membership.Cluster{tc.Nodes[0], n1}, 2)
	require.Eventually(t, func() bool {
		box0.mu.Lock()
		defer box0.mu.Unlock()
		return box0.merged["node-1"] == "state-of-node-1"
	}, clustertest.Timeout, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		box1.mu.Lock()
		defer box1.mu.Unlock()
		return box1.merged["node-0"] == "state-of-node-0"
	}, clustertest.Timeout, 10*time.Millisecond)
}

// joinWithChannel starts a node whose WellKnown is empty, registers the
// channel, then joins, so that the join's state exchange includes it.
func joinWithChannel(t *testing.T, cfg membership.Config, name string, box *inbox) *membership.Cluster {
	wk := cfg.WellKnown
	cfg.WellKnown = nil
	n, err := membership.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(n.Shutdown)
	_, err = n.Channel(name, box.handler())
	require.NoError(t, err)
	_, err = n.Join(context.Background(), wk...)
	require.NoError(t, err)
	return n
}

// calls is a CallHandler for tests: "echo" answers the request prefixed
// with the caller's name, "busy" fails with errBusy, "other" with an
// error no channel lists.
type calls struct{ membership.HandlerFuncs }

var errBusy = errors.New("busy")

func (calls) HandleCall(_ context.Context, from, method string, req []byte) ([]byte, error) {
	switch method {
	case "echo":
		return append([]byte(from+":"), req...), nil
	case "busy":
		return nil, fmt.Errorf("cannot now: %w", errBusy)
	}
	return nil, errors.New("no such method")
}

// A call reaches the member by name over the transport, its handler sees
// the caller's name, and a listed sentinel error keeps its identity.
func TestChannelCall(t *testing.T) {
	tc := clustertest.Start(t, 2)
	tc.WaitMembers(2)
	var chans []*membership.Channel
	for _, n := range tc.Nodes {
		ch, err := n.Channel("rpc", calls{}, membership.WithErrors(errors.New("unused"), errBusy))
		require.NoError(t, err)
		t.Cleanup(ch.Close)
		chans = append(chans, ch)
	}
	ctx := context.Background()
	resp, err := chans[0].Call(ctx, tc.Nodes[1].Name(), "echo", []byte("hi"))
	require.NoError(t, err)
	require.Equal(t, tc.Nodes[0].Name()+":hi", string(resp))

	_, err = chans[0].Call(ctx, tc.Nodes[1].Name(), "busy", nil)
	require.ErrorIs(t, err, errBusy)
	rerr, ok := errors.AsType[*membership.RemoteError](err)
	require.True(t, ok)
	require.Equal(t, tc.Nodes[1].Name(), rerr.Node)
	require.Contains(t, rerr.Message, "cannot now")

	_, err = chans[0].Call(ctx, tc.Nodes[1].Name(), "other", nil)
	require.NotErrorIs(t, err, errBusy)
	require.ErrorAs(t, err, &rerr)

	_, err = chans[0].Call(ctx, "node-9", "echo", nil)
	require.ErrorIs(t, err, membership.ErrUnknownMember)

	require.NotEmpty(t, tc.Nodes[1].LocalMember().TransportAddr)
	m, ok := tc.Nodes[0].Member(tc.Nodes[1].Name())
	require.True(t, ok)
	require.Equal(t, tc.Nodes[1].TransportAddr(), m.TransportAddr, "the transport address travels in metadata")
}
