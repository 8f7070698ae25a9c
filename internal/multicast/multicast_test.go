package multicast

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/ipv4"

	"github.com/troupe-go/troupe/internal/faultnet"
	"github.com/troupe-go/troupe/internal/netns"
)

// Every test here sends multicast, so each runs inside a network namespace
// of its own (netns.Run): lo is the only interface, and nothing can leave
// the machine. All nodes use 127.0.0.x addresses.

// testPort is free: each test has a namespace to itself.
const testPort = 17947

var testGroup = &net.UDPAddr{IP: net.ParseIP(DefaultGroup), Port: testPort}

// testNode is one Discoverer with what OnPeer reported.
type testNode struct {
	*Discoverer
	name, addr string
	joined     atomic.Bool

	mu    sync.Mutex
	peers map[string]string // node -> advertised address
}

// startNode starts node-i on 127.0.0.i with short timings, logging to t,
// closed when the test ends. mutate may change the Config.
func startNode(t *testing.T, i int, mutate func(*Config)) *testNode {
	t.Helper()
	host := fmt.Sprintf("127.0.0.%d", i)
	n := &testNode{name: fmt.Sprintf("node-%d", i), addr: host + ":7946", peers: map[string]string{}}
	cfg := Config{
		Port:         testPort,
		ClusterName:  "test",
		NodeName:     n.name,
		Interval:     20 * time.Millisecond,
		SlowInterval: time.Second,
		LocalHost:    host,
		Advertise:    func() string { return n.addr },
		Joined:       n.joined.Load,
		OnPeer: func(node, addr string) {
			n.mu.Lock()
			n.peers[node] = addr
			n.mu.Unlock()
		},
		Logger: testLogger(t, n.name),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	d, err := Start(context.Background(), cfg)
	require.NoError(t, err)
	n.Discoverer = d
	t.Cleanup(func() { assert.NoError(t, d.Close()) })
	return n
}

func (n *testNode) peerList() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.peers)
}

// hasPeers reports whether OnPeer reported exactly the given nodes, with
// their addresses.
func (n *testNode) hasPeers(others ...*testNode) bool {
	want := map[string]string{}
	for _, o := range others {
		want[o.name] = o.addr
	}
	return maps.Equal(n.peerList(), want)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("test_node", name)
}

// listenGroup is a bare socket on the test group, to capture datagrams.
func listenGroup(t *testing.T) *net.UDPConn {
	t.Helper()
	lc := net.ListenConfig{Control: shareAddr}
	c, err := lc.ListenPacket(context.Background(), "udp4", testGroup.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	uc := c.(*net.UDPConn)
	require.NoError(t, joinGroup(uc))
	return uc
}

func joinGroup(c *net.UDPConn) error {
	return ipv4.NewPacketConn(c).JoinGroup(nil, testGroup)
}

// rawSender is a socket that sends arbitrary bytes to the test group from
// 127.0.0.200.
type rawSender struct {
	t *testing.T
	c *net.UDPConn
}

func newRawSender(t *testing.T) rawSender {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 200)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return rawSender{t: t, c: c}
}

func (s rawSender) send(b []byte) {
	s.t.Helper()
	_, err := s.c.WriteToUDP(b, testGroup)
	require.NoError(s.t, err)
}

// capture reads datagrams until one decodes as an announcement of node.
func capture(t *testing.T, c *net.UDPConn, node string) ([]byte, announcement) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, MaxDatagram+1)
	h := newHandle()
	for {
		n, _, err := c.ReadFromUDP(buf)
		require.NoError(t, err, "waiting for an announcement of %s", node)
		if p, err := decodeAnnouncement(h, buf[:n]); err == nil && p.ann.Node == node {
			return append([]byte(nil), buf[:n]...), p.ann
		}
	}
}

const (
	waitFor = 5 * time.Second
	tick    = 5 * time.Millisecond
)

func TestMulticastTwoNodesFindEachOther(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	a := startNode(t, 1, nil)
	b := startNode(t, 2, nil)

	require.Eventually(t, func() bool { return a.hasPeers(b) && b.hasPeers(a) }, waitFor, tick)

	// Multicast loopback brings our own announcements back too, but not
	// necessarily before the peer's: wait for one.
	var s Stats
	require.Eventually(t, func() bool { s = a.Stats(); return s.Self > 0 }, waitFor, tick, "no announcement of our own came back")
	assert.NotZero(t, s.Sent)
	assert.NotZero(t, s.Accepted)
	assert.NotZero(t, s.Reported)
	assert.Equal(t, 1, s.Senders)
	// lo delivers each datagram once: nothing is mistaken for a replay.
	assert.Zero(t, s.Replayed+s.Malformed+s.Forged+s.Foreign+s.Stale+s.Partitioned+s.SendErrors, "%+v", s)
}

func TestMulticastFiveNodesFindEachOther(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	var nodes []*testNode
	for i := 1; i <= 5; i++ {
		nodes = append(nodes, startNode(t, i, nil))
	}
	others := func(i int) []*testNode {
		var o []*testNode
		for j, n := range nodes {
			if j != i {
				o = append(o, n)
			}
		}
		return o
	}
	require.Eventually(t, func() bool {
		for i, n := range nodes {
			if !n.hasPeers(others(i)...) {
				return false
			}
		}
		return true
	}, waitFor, tick)
}

func TestMulticastInterfaceByName(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	onLo := func(c *Config) { c.Interface = "lo" }
	a := startNode(t, 1, onLo)
	b := startNode(t, 2, onLo)
	require.Eventually(t, func() bool { return a.hasPeers(b) && b.hasPeers(a) }, waitFor, tick)

	cfg := validConfig()
	cfg.Interface = "nosuch0"
	d, err := Start(context.Background(), cfg)
	assert.Nil(t, d)
	assert.ErrorContains(t, err, "nosuch0")
}

func TestMulticastIgnoresOtherClusters(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	a := startNode(t, 1, nil)
	b := startNode(t, 2, func(c *Config) { c.ClusterName = "other" })

	require.Eventually(t, func() bool { return a.Stats().Foreign >= 5 && b.Stats().Foreign >= 5 }, waitFor, tick)
	assert.Empty(t, a.peerList())
	assert.Empty(t, b.peerList())
	assert.Zero(t, a.Stats().Accepted)
}

func TestMulticastRejectsWrongOrMissingKeys(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	withKey := func(k []byte) func(*Config) {
		return func(c *Config) { c.Keys = func() [][]byte { return [][]byte{k} } }
	}
	a := startNode(t, 1, withKey(key1))
	b := startNode(t, 2, withKey(key2))
	c := startNode(t, 3, nil) // no key: its unsigned announcements are refused, and it refuses signed ones

	require.Eventually(t, func() bool {
		return a.Stats().Forged >= 10 && b.Stats().Forged >= 10 && c.Stats().Forged >= 10
	}, waitFor, tick)
	for _, n := range []*testNode{a, b, c} {
		assert.Empty(t, n.peerList(), n.name)
		assert.Zero(t, n.Stats().Accepted, n.name)
	}
}

func TestMulticastKeyRotation(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	// a has installed the new key k2 as primary and still accepts k1; b
	// has not been told about k2 yet.
	a := startNode(t, 1, func(c *Config) { c.Keys = func() [][]byte { return [][]byte{key2, key1} } })
	b := startNode(t, 2, func(c *Config) { c.Keys = func() [][]byte { return [][]byte{key1} } })

	require.Eventually(t, func() bool { return a.hasPeers(b) }, waitFor, tick)
	require.Eventually(t, func() bool { return b.Stats().Forged > 0 }, waitFor, tick)
	assert.Empty(t, b.peerList(), "b cannot verify k2 yet")
}

func TestMulticastDropsReplayedAndStale(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	keys := func(c *Config) { c.Keys = func() [][]byte { return [][]byte{key1} } }
	listener := listenGroup(t)
	a := startNode(t, 1, keys)
	b := startNode(t, 2, keys)
	sender := newRawSender(t)

	old, _ := capture(t, listener, b.name)
	// Two more announcements of b reach a after the captured one (lo keeps
	// order), so a has seen a newer timestamp of b.
	accepted := a.Stats().Accepted
	require.Eventually(t, func() bool { return a.Stats().Accepted >= accepted+2 }, waitFor, tick)
	require.Zero(t, a.Stats().Replayed)

	sender.send(old)
	require.Eventually(t, func() bool { return a.Stats().Replayed == 1 }, waitFor, tick)

	// A correctly signed announcement from beyond MaxSkew.
	stale := announcement{Cluster: "test", Node: "node-9", Addr: "127.0.0.9:7946", Time: time.Now().Add(-2 * DefaultMaxSkew).UnixNano()}
	pkt, err := encodeAnnouncement(newHandle(), stale, key1)
	require.NoError(t, err)
	sender.send(pkt)
	require.Eventually(t, func() bool { return a.Stats().Stale == 1 }, waitFor, tick)
	assert.NotContains(t, a.peerList(), "node-9")
}

func TestMulticastSurvivesGarbage(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	a := startNode(t, 1, nil)
	sender := newRawSender(t)
	valid, err := encodeAnnouncement(newHandle(), announcement{Cluster: "test", Node: "x", Addr: "127.0.0.9:1", Time: time.Now().UnixNano()}, nil)
	require.NoError(t, err)

	garbage := [][]byte{
		{},
		[]byte("hello"),
		make([]byte, MaxDatagram+1),
		make([]byte, 9000),
		valid[:len(valid)-1],
		append([]byte{99}, valid[1:]...),
		append(append([]byte(nil), valid...), make([]byte, 5)...),
	}
	for i := range 100 {
		b := make([]byte, i*13%MaxDatagram)
		for j := range b {
			b[j] = byte(i*31 + j*7)
		}
		b = append([]byte{wireVersion, kindAnnounce}, b...)
		garbage = append(garbage, b)
	}
	for _, b := range garbage {
		sender.send(b)
	}
	require.Eventually(t, func() bool { return a.Stats().Malformed == uint64(len(garbage)) }, waitFor, tick)

	// Still listening.
	b := startNode(t, 2, nil)
	require.Eventually(t, func() bool { return a.hasPeers(b) }, waitFor, tick)
}

// TestMulticastFloodOfForgedNames sends 100,000 announcements with
// invented names (no keys, so they are all authentic as far as the node
// can tell): the replay table stays bounded, OnPeer's queue overflows into
// Throttled instead of growing, and the node still finds a real peer.
func TestMulticastFloodOfForgedNames(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	var blocked sync.Once
	a := startNode(t, 1, func(c *Config) {
		onPeer := c.OnPeer
		c.OnPeer = func(node, addr string) {
			// A slow OnPeer (a join that waits for a timeout) while the
			// flood lasts.
			blocked.Do(func() { <-release })
			onPeer(node, addr)
		}
	})
	t.Cleanup(unblock) // before Close, which waits for OnPeer
	sender := newRawSender(t)

	h := newHandle()
	const n = 100_000
	for i := range n {
		ann := announcement{Cluster: "test", Node: fmt.Sprintf("forged-%d", i), Addr: "127.0.0.9:7946", Time: time.Now().UnixNano()}
		b, err := encodeAnnouncement(h, ann, nil)
		require.NoError(t, err)
		sender.send(b)
		if i%1000 == 999 {
			require.LessOrEqual(t, a.Stats().Senders, MaxSenders)
			// Let the receiver drain its socket now and then, so that the
			// flood is read rather than dropped by the kernel.
			last := a.Stats().Received
			require.Eventually(t, func() bool {
				cur := a.Stats().Received
				idle := cur == last
				last = cur
				return idle
			}, waitFor, time.Millisecond)
		}
	}
	s := a.Stats()
	t.Logf("after the flood: %+v", s)
	assert.LessOrEqual(t, s.Senders, MaxSenders)
	assert.Greater(t, s.Accepted, uint64(MaxSenders), "the table had to evict")
	assert.Greater(t, s.Throttled, uint64(n/2), "OnPeer's queue is bounded")

	unblock()
	b := startNode(t, 2, nil)
	require.Eventually(t, func() bool { return a.peerList()[b.name] == b.addr }, waitFor, tick)
}

// TestMulticastSlowsDownOnceJoined counts a node's datagrams on the wire:
// many per second while alone, few once Joined reports true, and one at
// once on AnnounceNow.
func TestMulticastSlowsDownOnceJoined(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	const (
		fast = 20 * time.Millisecond
		slow = 500 * time.Millisecond
	)
	listener := listenGroup(t)
	a := startNode(t, 1, func(c *Config) { c.Interval = fast; c.SlowInterval = slow })

	// count reads a's announcements until the deadline.
	count := func(window time.Duration) int {
		require.NoError(t, listener.SetReadDeadline(time.Now().Add(window)))
		buf := make([]byte, MaxDatagram+1)
		n := 0
		for {
			if _, _, err := listener.ReadFromUDP(buf); err != nil {
				return n
			}
			n++
		}
	}

	// Alone: about 50 per second; ask for a fifth of that.
	assert.GreaterOrEqual(t, count(time.Second), 10)

	a.joined.Store(true)
	capture(t, listener, a.name) // the one already scheduled at the fast period
	n := count(2 * time.Second)
	// Four periods of at least 450 ms fit in 2 s at most.
	assert.LessOrEqual(t, n, 4, "announcements in 2 s once joined")
	assert.GreaterOrEqual(t, n, 2, "announcements go on after joining")

	// AnnounceNow sends long before the next slow period is due.
	capture(t, listener, a.name)
	start := time.Now()
	a.AnnounceNow()
	capture(t, listener, a.name)
	assert.Less(t, time.Since(start), slow*8/10, "AnnounceNow took as long as a period")

	// Alone again (the last member left): fast again after one slow period.
	a.joined.Store(false)
	require.Eventually(t, func() bool { return count(200*time.Millisecond) >= 4 }, waitFor, tick)
}

func TestMulticastPartition(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	faults := faultnet.New()
	faults.Partition([]string{"127.0.0.1"}, []string{"127.0.0.2", "127.0.0.3"})
	withFaults := func(c *Config) { c.Faults = faults }
	a := startNode(t, 1, withFaults)
	b := startNode(t, 2, withFaults)
	c := startNode(t, 3, withFaults)

	require.Eventually(t, func() bool { return b.hasPeers(c) && c.hasPeers(b) }, waitFor, tick)
	require.Eventually(t, func() bool { return a.Stats().Partitioned >= 20 }, waitFor, tick)
	assert.Empty(t, a.peerList(), "a heard nothing across the cut")
	assert.Zero(t, a.Stats().Accepted)

	faults.Heal()
	require.Eventually(t, func() bool { return a.hasPeers(b, c) && b.hasPeers(a, c) && c.hasPeers(a, b) }, waitFor, tick)
}

func TestMulticastKnownNodesAreNotReported(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	a := startNode(t, 1, func(c *Config) { c.Known = func(node string) bool { return node == "node-2" } })
	b := startNode(t, 2, nil)
	require.Eventually(t, func() bool { return b.hasPeers(a) }, waitFor, tick)
	require.Eventually(t, func() bool { return a.Stats().Known >= 5 }, waitFor, tick)
	assert.Empty(t, a.peerList())
}

// TestMulticastStopsOnCancel checks that canceling the context alone
// stops every goroutine and closes the sockets, and that Close is then
// still safe, twice.
func TestMulticastStopsOnCancel(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := validConfig()
	cfg.Port = testPort
	cfg.Interval = 10 * time.Millisecond
	d, err := Start(ctx, cfg)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return d.Stats().Sent > 0 }, waitFor, tick)

	cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("goroutines still running after cancel")
	}
	sent := d.Stats().Sent
	d.AnnounceNow() // does not block, sends nothing
	assert.Equal(t, sent, d.Stats().Sent)

	assert.NoError(t, d.Close())
	assert.NoError(t, d.Close())
}

// TestMulticastBadAdvertiseAddress checks that an address that is not
// host:port is counted and not sent, rather than announced for peers to
// drop.
func TestMulticastBadAdvertiseAddress(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	a := startNode(t, 1, func(c *Config) { c.Advertise = func() string { return "no-port" } })
	require.Eventually(t, func() bool { return a.Stats().SendErrors >= 3 }, waitFor, tick)
	assert.Zero(t, a.Stats().Sent)
}
