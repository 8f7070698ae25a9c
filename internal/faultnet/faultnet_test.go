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
