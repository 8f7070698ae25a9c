package multicast

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/faultnet"
)

// The receive policy, fed directly: no sockets, no goroutines, no clock.

var (
	t0      = time.Unix(1_700_000_000, 0)
	srcAddr = netip.MustParseAddr("127.0.0.2")
)

func testReceiver(t testing.TB, mutate func(*Config)) *receiver {
	t.Helper()
	c := validConfig()
	c.ClusterName = "orders"
	c.NodeName = "me"
	c.Interval = time.Second
	if mutate != nil {
		mutate(&c)
	}
	c, err := c.withDefaults()
	require.NoError(t, err)
	return newReceiver(c)
}

func datagram(t testing.TB, node string, at time.Time, key []byte) []byte {
	t.Helper()
	a := announcement{Cluster: "orders", Node: node, Addr: "127.0.0.2:7946", Time: at.UnixNano(), Nonce: 1}
	b, err := encodeAnnouncement(newHandle(), a, key)
	require.NoError(t, err)
	return b
}

func TestReceiverReportsNewPeer(t *testing.T) {
	r := testReceiver(t, nil)
	o, a, err := r.handle(datagram(t, "peer", t0, nil), srcAddr, t0)
	require.NoError(t, err)
	assert.Equal(t, outReport, o)
	assert.Equal(t, "peer", a.Node)
	assert.Equal(t, "127.0.0.2:7946", a.Addr)
}

func TestReceiverDrops(t *testing.T) {
	keyed := func(c *Config) { c.Keys = func() [][]byte { return [][]byte{key1} } }
	foreign := func() []byte {
		b, err := encodeAnnouncement(newHandle(), announcement{Cluster: "other", Node: "x", Addr: "127.0.0.2:1", Time: t0.UnixNano()}, key2)
		require.NoError(t, err)
		return b
	}()

	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		b      []byte
		at     time.Time
		want   outcome
	}{
		{"garbage", nil, []byte("hello"), t0, outMalformed},
		{"other cluster, other key", keyed, foreign, t0, outForeign},
		{"wrong key", keyed, datagram(t, "peer", t0, key2), t0, outForged},
		{"unsigned while keyed", keyed, datagram(t, "peer", t0, nil), t0, outForged},
		{"signed while unkeyed", nil, datagram(t, "peer", t0, key1), t0, outForged},
		{"forged self", keyed, datagram(t, "me", t0, key2), t0, outForged},
		{"self", keyed, datagram(t, "me", t0, key1), t0, outSelf},
		{"too old", nil, datagram(t, "peer", t0.Add(-DefaultMaxSkew-time.Nanosecond), nil), t0, outStale},
		{"too new", nil, datagram(t, "peer", t0.Add(DefaultMaxSkew+time.Nanosecond), nil), t0, outStale},
		{"edge of skew", nil, datagram(t, "peer", t0.Add(-DefaultMaxSkew), nil), t0, outReport},
		{"known", func(c *Config) { c.Known = func(n string) bool { return n == "peer" } }, datagram(t, "peer", t0, nil), t0, outKnown},
		{"rotation", func(c *Config) { c.Keys = func() [][]byte { return [][]byte{key2, key1} } }, datagram(t, "peer", t0, key1), t0, outReport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testReceiver(t, tc.mutate)
			o, _, _ := r.handle(tc.b, srcAddr, tc.at)
			assert.Equal(t, tc.want, o, "got %v", o)
			if tc.want != outReport && tc.want != outKnown {
				assert.Zero(t, r.senders.len(), "only authentic, fresh announcements enter the table")
			}
		})
	}
}

func TestReceiverStaleTimestampExtremes(t *testing.T) {
	r := testReceiver(t, nil)
	for _, ts := range []int64{-1 << 63, 1<<63 - 1, 0, -1} {
		b, err := encodeAnnouncement(newHandle(), announcement{Cluster: "orders", Node: "p", Addr: "h:1", Time: ts}, nil)
		require.NoError(t, err)
		o, _, _ := r.handle(b, srcAddr, t0)
		assert.Equal(t, outStale, o, "timestamp %d", ts)
	}
}

func TestReceiverReplay(t *testing.T) {
	r := testReceiver(t, nil)
	first := datagram(t, "peer", t0, nil)
	o, _, _ := r.handle(first, srcAddr, t0)
	require.Equal(t, outReport, o)

	// The same bytes again, and an older announcement, are replays even
	// much later (within MaxSkew of their own time).
	o, _, _ = r.handle(first, srcAddr, t0.Add(time.Minute/4))
	assert.Equal(t, outReplayed, o)
	o, _, _ = r.handle(datagram(t, "peer", t0.Add(-time.Second), nil), srcAddr, t0)
	assert.Equal(t, outReplayed, o)

	// A newer one is not, but comes within Interval of the report.
	o, _, _ = r.handle(datagram(t, "peer", t0.Add(time.Millisecond), nil), srcAddr, t0.Add(time.Millisecond))
	assert.Equal(t, outThrottled, o)
	// After Interval the node is reported again (its join may have failed).
	o, _, _ = r.handle(datagram(t, "peer", t0.Add(time.Second), nil), srcAddr, t0.Add(time.Second))
	assert.Equal(t, outReport, o)
}

func TestReceiverPartition(t *testing.T) {
	faults := faultnet.New()
	r := testReceiver(t, func(c *Config) { c.Faults = faults; c.LocalHost = "127.0.0.1" })
	faults.Partition([]string{"127.0.0.1"}, []string{"127.0.0.2"})
	o, _, _ := r.handle(datagram(t, "peer", t0, nil), srcAddr, t0)
	assert.Equal(t, outPartitioned, o)
	assert.Equal(t, uint64(1), faults.Dropped())

	faults.Heal()
	o, _, _ = r.handle(datagram(t, "peer", t0, nil), srcAddr, t0)
	assert.Equal(t, outReport, o)
}

// TestReceiverFloodIsBounded feeds 100,000 announcements with invented
// names: the table stays at MaxSenders, and the newest names are the ones
// kept.
func TestReceiverFloodIsBounded(t *testing.T) {
	r := testReceiver(t, nil)
	h := newHandle()
	const n = 100_000
	for i := range n {
		a := announcement{Cluster: "orders", Node: fmt.Sprintf("forged-%d", i), Addr: "127.0.0.9:7946", Time: t0.UnixNano() + int64(i)}
		b, err := encodeAnnouncement(h, a, nil)
		require.NoError(t, err)
		o, _, _ := r.handle(b, srcAddr, t0)
		require.Equal(t, outReport, o)
		require.LessOrEqual(t, r.senders.len(), MaxSenders)
	}
	assert.Equal(t, MaxSenders, r.senders.len())
	assert.Equal(t, uint64(n-MaxSenders), r.senders.evicted)
	assert.NotNil(t, r.senders.lookup(fmt.Sprintf("forged-%d", n-1)))
	assert.Nil(t, r.senders.lookup("forged-0"))
}

func TestSenderTableKeepsRecentlyHeard(t *testing.T) {
	tab := newSenderTable(2)
	tab.add("a")
	tab.add("b")
	require.NotNil(t, tab.lookup("a")) // a is now the most recent
	tab.add("c")                       // evicts b
	assert.NotNil(t, tab.lookup("a"))
	assert.Nil(t, tab.lookup("b"))
	assert.NotNil(t, tab.lookup("c"))
	assert.Equal(t, 2, tab.len())
}

func TestOutcomeString(t *testing.T) {
	for o := outPartitioned; o <= outReport; o++ {
		assert.NotEqual(t, "unknown", o.String())
	}
	assert.Equal(t, "unknown", outcome(-1).String())
}
