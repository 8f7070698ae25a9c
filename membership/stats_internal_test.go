package membership

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/transport"
)

// The gossip and state counters move where memberlist hands messages to
// the delegate and takes them from it, one per message, by its bytes.
func TestDelegateCountsGossipAndState(t *testing.T) {
	c := newTestCluster()
	c.queue = newTestQueue()
	d := &delegate{c: c}
	c.mu.channels["ch"] = &Channel{name: "ch", cluster: c, handler: HandlerFuncs{State: func(bool) []byte { return []byte("digest") }}}
	ch := c.mu.channels["ch"]

	require.NoError(t, ch.Broadcast([]byte("one")))
	require.NoError(t, ch.Broadcast([]byte("two")))
	require.Zero(t, c.stats.gossipOut.msgs.Load(), "queued is not sent")
	out := d.GetBroadcasts(0, 64<<10)
	require.Len(t, out, 2)
	require.Equal(t, uint64(2), c.stats.gossipOut.msgs.Load())
	require.Equal(t, uint64(len(out[0])+len(out[1])), c.stats.gossipOut.bytes.Load())

	d.NotifyMsg(out[0])
	d.NotifyMsg([]byte{99}) // malformed, still received
	require.Equal(t, uint64(2), c.stats.gossipIn.msgs.Load())
	require.Equal(t, uint64(len(out[0])+1), c.stats.gossipIn.bytes.Load())

	st := d.LocalState(false)
	require.Equal(t, uint64(1), c.stats.stateOut.msgs.Load())
	require.Equal(t, uint64(len(st)), c.stats.stateOut.bytes.Load())
	d.MergeRemoteState(st, true)
	require.Equal(t, uint64(1), c.stats.stateIn.msgs.Load())
	require.Equal(t, uint64(len(st)), c.stats.stateIn.bytes.Load())
	require.Zero(t, c.stats.channelOut.msgs.Load()+c.stats.channelIn.msgs.Load(), "gossip is not channel traffic")
}

// The transport's router counts each request once, whether it is served
// inline (TryServeRequest) or handed on (ServeRequest), with the answers'
// bytes as sent.
func TestRouterCountsChannelTraffic(t *testing.T) {
	c := newTestCluster()
	var got []string
	c.mu.channels["ch"] = &Channel{name: "ch", cluster: c, handler: callFuncs{
		HandlerFuncs: HandlerFuncs{Message: func(_ string, msg []byte) { got = append(got, string(msg)) }},
		call:         func(req []byte) []byte { return append([]byte("re:"), req...) },
	}}
	r := router{c}
	ctx := context.Background()

	_, ok, err := r.TryServeRequest(ctx, "peer", "ch", []byte("msg"))
	require.True(t, ok)
	require.NoError(t, err)
	_, err = r.ServeRequest(ctx, "peer", "ch", []byte("msg2"))
	require.NoError(t, err)
	require.Equal(t, []string{"msg", "msg2"}, got)
	require.Equal(t, uint64(2), c.stats.channelIn.msgs.Load())
	require.Equal(t, uint64(7), c.stats.channelIn.bytes.Load())

	// A call that TryServeRequest declines is counted by ServeRequest alone.
	_, ok, _ = r.TryServeRequest(ctx, "peer", "ch/get", []byte("q"))
	require.False(t, ok, "callFuncs is no InlineCallHandler")
	resp, err := r.ServeRequest(ctx, "peer", "ch/get", []byte("q"))
	require.NoError(t, err)
	require.Equal(t, "re:q", string(resp))
	require.Equal(t, uint64(3), c.stats.channelIn.msgs.Load())
	require.Equal(t, uint64(8), c.stats.channelIn.bytes.Load())
	require.Zero(t, c.stats.channelOut.msgs.Load(), "an answer is not a message of its own")
	require.Equal(t, uint64(4), c.stats.channelOut.bytes.Load())
}

// A call counts as sent once it reached the peer: answered, or refused by
// the peer's handler; not when it never left.
func TestCountCall(t *testing.T) {
	var s counters
	s.countCall(3, 5, nil)
	s.countCall(4, 0, &transport.RemoteError{Message: "no"})
	s.countCall(6, 0, errors.New("connection refused"))
	require.Equal(t, uint64(2), s.channelOut.msgs.Load())
	require.Equal(t, uint64(7), s.channelOut.bytes.Load())
	require.Equal(t, uint64(5), s.channelIn.bytes.Load())
	require.Zero(t, s.channelIn.msgs.Load())
}

type callFuncs struct {
	HandlerFuncs
	call func(req []byte) []byte
}

func (h callFuncs) HandleCall(_ context.Context, _, _ string, req []byte) ([]byte, error) {
	return h.call(req), nil
}
