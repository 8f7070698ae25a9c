package membership

import (
	"log/slog"
	"runtime"
	"testing"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/wire"
)

// These tests feed the memberlist delegate directly: they are about
// decoding and dispatch, not the network, so no cluster is started.

func newTestCluster() *Cluster {
	c := &Cluster{name: "self", dedup: newDedup()}
	c.log = discardLogger()
	c.mu.channels = map[string]*Channel{}
	c.mu.members = map[string]Member{}
	c.mu.leaving = map[string]bool{}
	return c
}

func TestDelegateDropsAndCountsBadInput(t *testing.T) {
	c := newTestCluster()
	d := &delegate{c: c}
	var got []string
	c.mu.channels["ch"] = &Channel{name: "ch", cluster: c, handler: HandlerFuncs{
		Message: func(from string, msg []byte) { got = append(got, from+":"+string(msg)) },
	}}

	for _, bad := range [][]byte{nil, {}, {99}, {kindBroadcast}, {kindBroadcast, 0xc1}, {2, 0x91, 0x01}, {kindLeave, 0xff}} {
		d.NotifyMsg(bad)
	}
	require.Equal(t, uint64(7), c.stats.malformed.Load(), "every undecodable message is counted (an empty one too)")
	require.Empty(t, got)

	c.queue = newTestQueue()
	msg, err := encodeMsg(kindBroadcast, broadcastWire{C: "nope", O: "peer", I: 1, B: []byte("x")})
	require.NoError(t, err)
	d.NotifyMsg(msg)
	require.Equal(t, uint64(1), c.stats.unknownChannel.Load())

	msg, err = encodeMsg(kindBroadcast, broadcastWire{C: "ch", O: "peer", I: 2, B: []byte("hello")})
	require.NoError(t, err)
	d.NotifyMsg(msg)
	require.Equal(t, []string{"peer:hello"}, got)

	d.MergeRemoteState([]byte{stateVersion + 1, 0x80}, false)
	d.MergeRemoteState([]byte{stateVersion, 0xc1}, false)
	require.Equal(t, uint64(9), c.stats.malformed.Load())
}

func TestDedupIsBounded(t *testing.T) {
	d := newDedup()
	for i := range uint64(3 * dedupSize) {
		require.False(t, d.seen(i))
	}
	require.Len(t, d.set, dedupSize)
	require.True(t, d.seen(3*dedupSize-1), "recent ids are remembered")
	require.False(t, d.seen(0), "the oldest are forgotten")
}

func FuzzDelegateNotifyMsg(f *testing.F) {
	for _, kind := range []byte{kindBroadcast, kindLeave} {
		msg, _ := encodeMsg(kind, broadcastWire{C: "ch", O: "o", I: 7, B: []byte("b")})
		f.Add(msg)
	}
	f.Add([]byte{kindBroadcast, 0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := newTestCluster()
		c.mu.channels["ch"] = &Channel{name: "ch", cluster: c, handler: HandlerFuncs{}}
		c.queue = newTestQueue()
		d := &delegate{c: c}
		d.NotifyMsg(b)
		d.MergeRemoteState(b, false)
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newTestQueue() *memberlist.TransmitLimitedQueue {
	return &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 1 }, RetransmitMult: 1}
}

// A keyed broadcast replaces a queued older one with the same key, so a
// value that changes quickly is not gossiped in every version; relayed
// and unkeyed broadcasts never replace anything.
func TestBroadcastKeyedInvalidatesOlder(t *testing.T) {
	c := newTestCluster()
	c.queue = newTestQueue()
	ch := &Channel{name: "ch", cluster: c, handler: HandlerFuncs{}}
	require.NoError(t, ch.BroadcastKeyed("k", []byte("v1")))
	require.NoError(t, ch.BroadcastKeyed("k", []byte("v2")))
	require.NoError(t, ch.BroadcastKeyed("other", []byte("x")))
	require.NoError(t, ch.Broadcast([]byte("plain")))
	require.NoError(t, ch.Broadcast([]byte("plain")))
	require.Equal(t, 4, c.queue.NumQueued(), "v1 was replaced by v2")

	var got []string
	for _, raw := range c.queue.GetBroadcasts(0, 64<<10) {
		var m broadcastWire
		require.NoError(t, wire.Unmarshal(raw[1:], &m))
		got = append(got, string(m.B))
	}
	require.ElementsMatch(t, []string{"v2", "x", "plain", "plain"}, got)
}

func TestBroadcastQueueIsBounded(t *testing.T) {
	c := newTestCluster()
	c.queue = newTestQueue()
	ch := &Channel{name: "ch", cluster: c, handler: HandlerFuncs{}}
	for range maxQueuedBroadcasts + 100 {
		require.NoError(t, ch.Broadcast([]byte("x")))
	}
	require.Equal(t, maxQueuedBroadcasts, c.queue.NumQueued())
	require.Equal(t, uint64(100), c.stats.queueDropped.Load())
}

// stateSeeds returns push/pull states as nodes send them, and some that
// no node sends, by name.
func stateSeeds(t testing.TB) map[string][]byte {
	c := newTestCluster()
	c.mu.channels["a"] = &Channel{name: "a", cluster: c, handler: HandlerFuncs{State: func(bool) []byte { return []byte("digest of a") }}}
	c.mu.channels["b"] = &Channel{name: "b", cluster: c, handler: HandlerFuncs{}}
	enc := func(st stateWire) []byte {
		b, err := wire.Marshal(st)
		require.NoError(t, err)
		return append([]byte{stateVersion}, b...)
	}
	local := (&delegate{c: c}).LocalState(false)
	return map[string][]byte{
		"local":           local,
		"unknown-channel": enc(stateWire{F: "peer", S: map[string][]byte{"zz": []byte("x"), "a": []byte("y")}}),
		"no-channels":     enc(stateWire{F: "peer"}),
		"no-sender":       enc(stateWire{S: map[string][]byte{"a": {1}}}),
		"nil-share":       enc(stateWire{F: "peer", S: map[string][]byte{"a": nil, "b": {}}}),
		"other-version":   append([]byte{stateVersion + 1}, local[1:]...),
		"huge-map-len":    {stateVersion, 0x82, 0xa1, 'f', 0xa1, 'p', 0xa1, 's', 0xdf, 0xff, 0xff, 0xff, 0xff},
		"huge-bin-len":    {stateVersion, 0x82, 0xa1, 'f', 0xa1, 'p', 0xa1, 's', 0x81, 0xa1, 'a', 0xc6, 0xff, 0xff, 0xff, 0xff},
		"truncated":       local[:len(local)/2],
	}
}

// FuzzMergeRemoteState feeds arbitrary bytes to the push/pull merge, as
// a peer's state exchange could carry them (FuzzDelegateNotifyMsg feeds
// it too, but from gossip seeds). It must never panic, must allocate in
// proportion to the input whatever lengths it claims, and must hand each
// registered channel exactly its share, with the sender's name, counting
// what it drops.
func FuzzMergeRemoteState(f *testing.F) {
	for _, b := range stateSeeds(f) {
		f.Add(b)
	}
	type merge struct {
		from, state string
		join        bool
	}
	// One cluster for every run: newTestCluster's dedup table is large,
	// and the merge does not use it.
	c := newTestCluster()
	var got map[string][]merge
	for _, name := range []string{"a", "b"} {
		c.mu.channels[name] = &Channel{name: name, cluster: c, handler: HandlerFuncs{
			Merge: func(from string, state []byte, join bool) {
				got[name] = append(got[name], merge{from, string(state), join})
			},
		}}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, join := range []bool{false, true} {
			got = map[string][]merge{}
			c.stats = counters{}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			(&delegate{c: c}).MergeRemoteState(b, join)
			runtime.ReadMemStats(&after)
			if n, bound := after.TotalAlloc-before.TotalAlloc, decodeAllocBound(b); n > bound {
				t.Fatalf("merging %d bytes allocated %d, bound %d", len(b), n, bound)
			}

			// What the merge should have done, decoded independently.
			var st stateWire
			valid := len(b) > 0 && b[0] == stateVersion && wire.Unmarshal(b[1:], &st) == nil
			switch {
			case len(b) == 0:
				require.Empty(t, got)
				require.Zero(t, c.stats.malformed.Load())
			case !valid:
				require.Empty(t, got)
				require.Equal(t, uint64(1), c.stats.malformed.Load())
			default:
				require.Zero(t, c.stats.malformed.Load())
				unknown := 0
				for name, share := range st.S {
					if _, ok := c.mu.channels[name]; !ok {
						unknown++
						continue
					}
					require.Equal(t, []merge{{st.F, string(share), join}}, got[name], "channel %q", name)
				}
				for name := range got {
					_, sent := st.S[name]
					require.True(t, sent, "channel %q got a share that was not sent", name)
				}
				require.Equal(t, uint64(unknown), c.stats.unknownChannel.Load())
			}
		}
	})
}
