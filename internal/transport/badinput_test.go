package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Each case opens a raw connection, misbehaves, and expects the server to
// close the connection, count it, and go on serving others.
func TestBadInputClosesTheConnection(t *testing.T) {
	srv := newTransport(t, echo)
	good := newTransport(t, echo)
	handshakes := func(s Stats) uint64 { return s.HandshakeFailures }
	frames := func(s Stats) uint64 { return s.BadFrames }
	lengthOnly := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	oldVersion := plainHello()
	oldVersion.version = 0
	wrongMode := plainHello()
	wrongMode.mode = modeKey
	strangeMode := plainHello()
	strangeMode.mode = 77

	for _, tc := range []struct {
		name    string
		hello   *hello // nil: send only the bytes
		send    []byte
		counter func(Stats) uint64
	}{
		{"garbage instead of a hello", nil, bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 3)[:helloSize], handshakes},
		{"protocol version too old", oldVersion, nil, handshakes},
		{"cluster key against plaintext", wrongMode, nil, handshakes},
		{"unknown mode", strangeMode, nil, handshakes},
		{"length of 4 GiB", plainHello(), lengthOnly(0xffffffff), frames},
		{"length one over the limit", plainHello(), lengthOnly(DefaultMaxFrameSize + 1), frames},
		{"frame shorter than a header", plainHello(), append(lengthOnly(3), kindRequest, 0, 0), frames},
		{"truncated frame", plainHello(), encodeFrame(frame{kind: kindRequest, id: 1, method: "echo", body: []byte("cut short")})[:12], frames},
		{"unknown kind", plainHello(), encodeFrame(frame{kind: 99, id: 1}), frames},
		{"answer sent to the listener", plainHello(), encodeFrame(frame{kind: kindResponse, id: 1}), frames},
		{"method runs past the frame", plainHello(), append(lengthOnly(headerSize+2), kindRequest, 0, 0, 0, 0, 0, 0, 0, 1, 200, 'x'), frames},
		{"payload in a ping", plainHello(), append(lengthOnly(headerSize+1), kindPing, 0, 0, 0, 0, 0, 0, 0, 1, 0), frames},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.counter(srv.Stats())
			conn, br := rawPeer(t, srv.Addr(), tc.hello)
			_, err := conn.Write(tc.send)
			require.NoError(t, err)
			require.NoError(t, conn.(*net.TCPConn).CloseWrite()) // so that a truncated frame ends
			requireClosedByPeer(t, br)
			require.Eventually(t, func() bool { return tc.counter(srv.Stats()) == before+1 }, 5*time.Second, 5*time.Millisecond)

			resp, err := good.Call(testCtx(t), srv.Addr(), "echo", []byte("still here"))
			require.NoError(t, err)
			require.Equal(t, "still here", string(resp))
		})
	}
}

// A frame that was not sealed with the session key, sent on a connection
// that completed the cluster-key handshake, is refused.
func TestUnsealedFrameOnKeyedConnection(t *testing.T) {
	k := key(1)
	srv := newTransport(t, echo, withKeys(k))
	conn, br := rawPeer(t, srv.Addr(), nil)
	h := hello{version: protocolVersion, mode: modeKey, maxFrame: DefaultMaxFrameSize}
	_, err := handshake(br, conn, true, h, [][]byte{k})
	require.NoError(t, err, "the key is right")

	_, err = conn.Write(encodeFrame(frame{kind: kindRequest, id: 1, method: "echo", body: bytes.Repeat([]byte("x"), 32)}))
	require.NoError(t, err)
	requireClosedByPeer(t, br)
	require.Eventually(t, func() bool { return srv.Stats().BadFrames == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, srv.Stats().FramesIn)
}

// requireClosedByPeer reads until the server closes the connection, which
// must happen before rawPeer's deadline.
func requireClosedByPeer(t *testing.T, br *bufio.Reader) {
	t.Helper()
	for {
		_, err := br.ReadByte()
		if err != nil {
			require.False(t, os.IsTimeout(err), "the server kept the connection open")
			return
		}
	}
}
