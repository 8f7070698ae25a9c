package membership_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// echoCalls answers every call with "re:" and the request, and refuses
// the method "refuse".
type echoCalls struct{ *inbox }

var errRefused = errors.New("refused")

func (e echoCalls) HandleMessage(from string, msg []byte) { e.handler().HandleMessage(from, msg) }
func (e echoCalls) LocalState(join bool) []byte           { return e.handler().LocalState(join) }
func (e echoCalls) MergeRemoteState(from string, st []byte, join bool) {
	e.handler().MergeRemoteState(from, st, join)
}

func (e echoCalls) HandleCall(_ context.Context, _, method string, req []byte) ([]byte, error) {
	if method == "refuse" {
		return nil, errRefused
	}
	return append([]byte("re:"), req...), nil
}

// Stats counts the channel traffic of both ends, a call's answer with it,
// and the gossip and state exchange that carry the channel's broadcasts
// and shares.
func TestStatsCountTraffic(t *testing.T) {
	tc := clustertest.Start(t, 2)
	tc.WaitMembers(2)
	a, b := tc.Nodes[0], tc.Nodes[1]
	boxA, boxB := newInbox("state-a"), newInbox("state-b")
	chA, err := a.Channel("traffic", echoCalls{boxA}, membership.WithErrors(errRefused))
	require.NoError(t, err)
	t.Cleanup(chA.Close)
	chB, err := b.Channel("traffic", echoCalls{boxB}, membership.WithErrors(errRefused))
	require.NoError(t, err)
	t.Cleanup(chB.Close)
	ctx, cancel := context.WithTimeout(context.Background(), clustertest.Timeout)
	defer cancel()

	require.NoError(t, chA.Send(ctx, b.Name(), []byte("hello"))) // 5 bytes
	require.Eventually(t, func() bool { _, ok := boxB.has("hello"); return ok }, clustertest.Timeout, 10*time.Millisecond)
	resp, err := chA.Call(ctx, b.Name(), "echo", []byte("ping")) // 4 bytes, answer 7
	require.NoError(t, err)
	require.Equal(t, "re:ping", string(resp))
	_, err = chA.Call(ctx, b.Name(), "refuse", []byte("no")) // 2 bytes, reached b
	require.ErrorIs(t, err, errRefused)
	_, err = chA.Call(ctx, "nobody", "echo", []byte("lost"))
	require.ErrorIs(t, err, membership.ErrUnknownMember)

	sa, sb := a.Stats(), b.Stats()
	require.Equal(t, uint64(3), sa.ChannelSent)
	require.Equal(t, uint64(5+4+2), sa.ChannelBytesSent)
	require.Equal(t, uint64(0), sa.ChannelReceived)
	require.Equal(t, uint64(7), sa.ChannelBytesReceived)
	require.Equal(t, uint64(3), sb.ChannelReceived)
	require.Equal(t, uint64(5+4+2), sb.ChannelBytesReceived)
	require.Equal(t, uint64(0), sb.ChannelSent)
	require.Equal(t, uint64(7), sb.ChannelBytesSent)

	require.NoError(t, chA.Broadcast([]byte("to all")))
	require.Eventually(t, func() bool { _, ok := boxB.has("to all"); return ok }, clustertest.Timeout, 10*time.Millisecond)
	sa, sb = a.Stats(), b.Stats()
	require.Positive(t, sa.GossipSent)
	require.Greater(t, sa.GossipBytesSent, uint64(len("to all")))
	require.Positive(t, sb.GossipReceived)
	require.Greater(t, sb.GossipBytesReceived, uint64(len("to all")))

	// The join was a state exchange: both ends sent and merged one.
	for _, n := range tc.Nodes {
		s := n.Stats()
		require.Positive(t, s.StateSent, n.Name())
		require.Positive(t, s.StateReceived, n.Name())
		require.Positive(t, s.StateBytesSent, n.Name())
		require.Positive(t, s.StateBytesReceived, n.Name())
	}
}

// Stats counts members by state: alive, then failed when cut off, and
// alive again after the heal. (Suspect is not asserted: it reads
// Cluster.Suspects, which sees no suspect with memberlist v0.7.0, whose
// Members never sets Node.State.)
func TestStatsCountMembersByState(t *testing.T) {
	tc := clustertest.Start(t, 3)
	tc.WaitMembers(3)
	s := tc.Nodes[0].Stats()
	require.Equal(t, [3]int{3, 0, 0}, [3]int{s.Alive, s.Suspect, s.Failed}, "alive, suspect, failed")

	tc.Net.Isolate(clustertest.Host(2))
	require.Eventually(t, func() bool {
		s = tc.Nodes[0].Stats()
		return s.Failed == 1
	}, clustertest.Timeout, 10*time.Millisecond)
	require.Equal(t, [3]int{2, 0, 1}, [3]int{s.Alive, s.Suspect, s.Failed})

	tc.Net.Heal()
	tc.WaitMembers(3)
	s = tc.Nodes[0].Stats()
	require.Equal(t, [3]int{3, 0, 0}, [3]int{s.Alive, s.Suspect, s.Failed})
}
