package faultnet

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPartitionAndHeal(t *testing.T) {
	n := New()
	require.True(t, n.Allowed("127.0.0.1:1", "127.0.0.2:2"))
	n.Partition([]string{"127.0.0.1"}, []string{"127.0.0.2", "127.0.0.3"})
	require.False(t, n.Allowed("127.0.0.1:1", "127.0.0.2:2"))
	require.False(t, n.Allowed("127.0.0.3", "127.0.0.1"))
	require.True(t, n.Allowed("127.0.0.2", "127.0.0.3"))
	require.True(t, n.Allowed("127.0.0.4", "127.0.0.1"), "unlisted hosts reach everyone")
	require.True(t, n.Drop("127.0.0.1", "127.0.0.2"))
	require.Equal(t, uint64(1), n.Dropped())
	n.Heal()
	require.True(t, n.Allowed("127.0.0.1", "127.0.0.2"))

	n.Block("127.0.0.1", "127.0.0.2")
	require.False(t, n.Allowed("127.0.0.2", "127.0.0.1"))
	require.True(t, n.Allowed("127.0.0.1", "127.0.0.3"))

	var nilNet *Network
	require.True(t, nilNet.Allowed("a", "b"))
	require.False(t, nilNet.Drop("a", "b"))
}

func TestCutClosesTrackedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()

	n := New()
	raw, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	require.NoError(t, err)
	c := n.Track(raw, "127.0.0.9", ln.Addr().String())
	defer c.Close()
	srv := <-accepted
	defer srv.Close()

	n.Block("127.0.0.9", "127.0.0.1")
	_, err = c.Write([]byte("x"))
	require.Error(t, err, "a cut must close connections that cross it")

	require.True(t, n.Drop("127.0.0.9", ln.Addr().String()), "new traffic across the cut is refused")
	raw2, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	require.NoError(t, err)
	_, err = n.Track(raw2, "127.0.0.9", ln.Addr().String()).Write([]byte("x"))
	require.Error(t, err, "a connection tracked across a cut is closed at once")
	n.Heal()
	require.True(t, n.Allowed("127.0.0.9", ln.Addr().String()))
}

func TestIsolate(t *testing.T) {
	n := New()
	n.Isolate("127.0.0.2:7946")
	require.False(t, n.Allowed("127.0.0.2", "127.0.0.3"))
	require.False(t, n.Allowed("127.0.0.9", "127.0.0.2:1"), "hosts listed nowhere are cut off too")
	require.True(t, n.Allowed("127.0.0.3", "127.0.0.4"))
	require.True(t, n.Allowed("127.0.0.2:1", "127.0.0.2:2"), "a host still reaches itself")
	n.Heal()
	require.True(t, n.Allowed("127.0.0.2", "127.0.0.3"))
}

func TestDelayLatency(t *testing.T) {
	n := New()
	n.Delay("127.0.0.1:5", "127.0.0.2", time.Second)
	require.Equal(t, time.Second, n.Latency("127.0.0.1", "127.0.0.2:9"))
	require.Equal(t, time.Second, n.Latency("127.0.0.2", "127.0.0.1"), "both directions")
	require.Zero(t, n.Latency("127.0.0.1", "127.0.0.3"))
	require.True(t, n.Allowed("127.0.0.1", "127.0.0.2"), "a delay is not a cut")
	n.Delay("127.0.0.2", "127.0.0.1", 0)
	require.Zero(t, n.Latency("127.0.0.1", "127.0.0.2"))
	n.Delay("127.0.0.1", "127.0.0.2", time.Second)
	n.Heal()
	require.Zero(t, n.Latency("127.0.0.1", "127.0.0.2"), "Heal removes delays")

	var nilNet *Network
	require.Zero(t, nilNet.Latency("a", "b"))
}

// pipe returns both ends of a TCP connection on loopback.
func pipe(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	client, err = net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A delayed write arrives after a write that was sent later on an
// undelayed connection; Heal lifts the delay for the next write.
func TestDelayHoldsBackWrites(t *testing.T) {
	const d = 300 * time.Millisecond
	n := New()
	slowC, slowS := pipe(t)
	fastC, fastS := pipe(t)
	slow := n.Track(slowC, "127.0.0.9", "127.0.0.1")
	fast := n.Track(fastC, "127.0.0.8", "127.0.0.1")
	n.Delay("127.0.0.9", "127.0.0.1", d)

	arrived := make(chan string, 2)
	read := func(c net.Conn, name string) {
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err == nil {
			arrived <- name
		}
	}
	go read(slowS, "slow")
	go read(fastS, "fast")
	begin := time.Now()
	wrote := make(chan error, 1)
	go func() { _, err := slow.Write([]byte("x")); wrote <- err }()
	_, err := fast.Write([]byte("x"))
	require.NoError(t, err)
	require.Equal(t, "fast", <-arrived)
	require.Equal(t, "slow", <-arrived)
	require.NoError(t, <-wrote)
	require.GreaterOrEqual(t, time.Since(begin), d, "the delayed write waited d")

	// A Close during the wait ends the write.
	go func() { _, err := slow.Write([]byte("y")); wrote <- err }()
	require.NoError(t, slow.Close())
	require.ErrorIs(t, <-wrote, net.ErrClosed)

	n.Heal()
	require.Zero(t, n.Latency("127.0.0.9", "127.0.0.1"))
}

// A cut during a delayed write ends it, as it closes the connection.
func TestCutEndsDelayedWrite(t *testing.T) {
	n := New()
	c, _ := pipe(t)
	tc := n.Track(c, "127.0.0.9", "127.0.0.1")
	n.Delay("127.0.0.9", "127.0.0.1", time.Hour)
	wrote := make(chan error, 1)
	go func() { _, err := tc.Write([]byte("x")); wrote <- err }()
	n.Isolate("127.0.0.1")
	require.ErrorIs(t, <-wrote, net.ErrClosed)
}
