package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Connections that complete the handshake and then claim a frame of the
// largest size, sending nothing more, must not make the server hold the
// claimed bytes: a frame's buffer grows as its bytes arrive.
func TestLengthClaimsDoNotPinMemory(t *testing.T) {
	const (
		conns = 50
		claim = DefaultMaxFrameSize // the largest a peer may claim
	)
	// The watch tells when every connection's reader has taken the
	// length and waits for the body: only then is the allocation made.
	helloLen := len(plainHello().marshal())
	watch := newReadWatch(int64(helloLen + lengthSize))
	srv := newTransport(t, echo, func(c *Config) { c.Faults = watch })

	before := heapInUse()
	for range conns {
		conn, _ := rawPeer(t, srv.Addr(), plainHello())
		_, err := conn.Write(binary.BigEndian.AppendUint32(nil, claim))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return watch.waiting.Load() == conns }, 10*time.Second, 5*time.Millisecond,
		"every reader took the length and waits for the body")
	grown := heapInUse() - before
	t.Logf("heap grew by %d KiB for %d connections claiming %d KiB each", grown>>10, conns, claim>>10)
	require.Less(t, grown, int64(conns*claim/16), "the claims were allocated up front")
	require.Equal(t, conns, srv.Stats().OpenConns)
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// readWatch is a fault hook that drops nothing and counts the accepted
// connections whose reader has read want bytes and asks for more.
type readWatch struct {
	want    int64
	waiting atomic.Int64
}

func newReadWatch(want int64) *readWatch { return &readWatch{want: want} }

func (w *readWatch) Drop(string, string) bool             { return false }
func (w *readWatch) Latency(string, string) time.Duration { return 0 }
func (w *readWatch) Track(c net.Conn, _, _ string) net.Conn {
	return &watchedConn{Conn: c, w: w}
}

type watchedConn struct {
	net.Conn
	w    *readWatch
	read atomic.Int64
	once sync.Once
}

func (c *watchedConn) Read(b []byte) (int, error) {
	if c.read.Load() >= c.w.want {
		c.once.Do(func() { c.w.waiting.Add(1) })
	}
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

// A flood of connections beyond MaxConnsPerIP and MaxConns is closed at
// once and counted, while the peers already connected keep calling, a
// peer from another address still gets in under the total, and the slots
// come back when the flood goes.
func TestConnectionLimits(t *testing.T) {
	srv := newTransport(t, echo, func(c *Config) {
		c.MaxConns, c.MaxConnsPerIP = 8, 4
		c.DialTimeout = 20 * time.Second // the flood's silent handshakes stay for the test
	})
	client := func(host string) *Transport {
		return newTransport(t, echo, func(c *Config) { c.BindAddr = host + ":0" })
	}
	call := func(cli *Transport) error {
		resp, err := cli.Call(testCtx(t), srv.Addr(), "echo", []byte("hi"))
		if err == nil && string(resp) != "hi" {
			t.Fatalf("answer %q", resp)
		}
		return err
	}
	// flood opens n silent connections from host and checks that the
	// server closed wantRefused of them at once and kept the others.
	refusedBefore := uint64(0)
	flood := func(host string, n, wantRefused int) []net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(host)}}
		conns := make([]net.Conn, n)
		for i := range conns {
			c, err := d.Dial("tcp", srv.Addr())
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
			conns[i] = c
		}
		refusedBefore += uint64(wantRefused)
		require.Eventually(t, func() bool { return srv.Stats().RefusedConns == refusedBefore }, 10*time.Second, 5*time.Millisecond)
		closed := 0
		for _, c := range conns {
			// The server closed the refused ones before counting them.
			require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil && !isTimeout(err) {
				closed++
			}
		}
		require.Equal(t, wantRefused, closed, "the refused connections are closed at once, the others kept")
		return conns
	}

	first := client("127.0.0.2")
	require.NoError(t, call(first))

	// One address over its share: the rest of the cluster is not hurt.
	fromOne := flood("127.0.0.1", 10, 10-4)
	require.NoError(t, call(first), "a connection made before the flood")
	second := client("127.0.0.3")
	require.NoError(t, call(second), "a new peer from another address, under the total")

	// Over the total: 6 of 8 are taken, so 2 more get in.
	fromOther := flood("127.0.0.4", 10, 10-2)
	require.NoError(t, call(first))
	require.NoError(t, call(second))
	late := client("127.0.0.5")
	err := call(late)
	require.ErrorIs(t, err, ErrHandshake, "no room for a new connection while the total is reached")

	for _, c := range append(fromOne, fromOther...) {
		_ = c.Close()
	}
	require.Eventually(t, func() bool { return call(late) == nil }, 10*time.Second, 20*time.Millisecond,
		"the flood's slots are released when its connections close")
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Frames larger than the first allocation grow as they arrive, and a
// read interrupted by a timeout anywhere in one resumes where it stopped,
// sealed or not.
func TestLargeFrameGrowsAndResumes(t *testing.T) {
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}
	frames := []frame{
		{kind: kindRequest, id: 1, method: "big", body: body(5*firstBodyAlloc + 123)},
		{kind: kindPing, id: 2},
		{kind: kindResponse, id: 3, body: body(firstBodyAlloc + 1)},
	}
	for _, sealed := range []bool{false, true} {
		wire, open := wireOf(t, frames, sealed)
		r := frameReader{r: bufio.NewReaderSize(&stutter{data: wire}, 4096), max: DefaultMaxFrameSize, open: open}
		for _, want := range frames {
			got, _, err := readPastTimeouts(&r)
			require.NoError(t, err)
			require.Equal(t, want.kind, got.kind)
			require.Equal(t, want.id, got.id)
			require.Equal(t, want.method, got.method)
			require.True(t, bytes.Equal(want.body, got.body), "sealed=%v: body of frame %d", sealed, want.id)
		}
		_, _, err := readPastTimeouts(&r)
		require.ErrorIs(t, err, io.EOF)
	}
}
