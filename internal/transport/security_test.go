package transport

import (
	"bytes"
	"crypto/tls"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/troupe-go/troupe/internal/testcerts"
)

func TestMutualTLS(t *testing.T) {
	ca, otherCA := testcerts.NewCA(t), testcerts.NewCA(t)
	srv := newTransport(t, echo, withTLS(ca.TLSConfig(t)))
	ctx := testCtx(t)
	refusals := func() uint64 { return srv.Stats().HandshakeFailures }

	t.Run("peers of the cluster CA talk", func(t *testing.T) {
		cli := newTransport(t, echo, withTLS(ca.TLSConfig(t)))
		resp, err := cli.Call(ctx, srv.Addr(), "echo", []byte("hi"))
		require.NoError(t, err)
		require.Equal(t, "hi", string(resp))
	})

	t.Run("client certificate from another CA is refused", func(t *testing.T) {
		before := refusals()
		cli := newTransport(t, echo, withTLS(&tls.Config{
			Certificates: []tls.Certificate{otherCA.Issue(t)},
			RootCAs:      ca.Pool, // it would trust the server
			ClientCAs:    otherCA.Pool,
		}))
		_, err := cli.Call(ctx, srv.Addr(), "echo", nil)
		require.ErrorIs(t, err, ErrHandshake)
		require.Eventually(t, func() bool { return refusals() == before+1 }, 5*time.Second, 5*time.Millisecond)
	})

	t.Run("server certificate from another CA is refused", func(t *testing.T) {
		rogue := newTransport(t, echo, withTLS(&tls.Config{
			Certificates: []tls.Certificate{otherCA.Issue(t)},
			RootCAs:      ca.Pool,
			ClientCAs:    ca.Pool, // it would accept us
		}))
		cli := newTransport(t, echo, withTLS(ca.TLSConfig(t)))
		_, err := cli.Call(ctx, rogue.Addr(), "echo", nil)
		require.ErrorIs(t, err, ErrHandshake)
		require.Equal(t, uint64(1), cli.Stats().HandshakeFailures)
	})

	t.Run("client without a certificate is refused", func(t *testing.T) {
		before := refusals()
		conn, err := tls.Dial("tcp", srv.Addr(), &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
		if err == nil {
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
			b := plainHello().marshal()
			_, _ = conn.Write(b[:])
			_, err = io.ReadFull(conn, b[:])
		}
		require.Error(t, err, "with TLS 1.3 the refusal arrives on the first read")
		require.Eventually(t, func() bool { return refusals() == before+1 }, 5*time.Second, 5*time.Millisecond)
	})

	t.Run("plaintext peer is refused", func(t *testing.T) {
		before := refusals()
		cli := newTransport(t, echo)
		_, err := cli.Call(ctx, srv.Addr(), "echo", nil)
		require.ErrorIs(t, err, ErrHandshake)
		require.Eventually(t, func() bool { return refusals() == before+1 }, 5*time.Second, 5*time.Millisecond)
	})
}

func TestClusterKey(t *testing.T) {
	k1, k2 := key(1), key(2)
	ctx := testCtx(t)

	t.Run("same key", func(t *testing.T) {
		a := newTransport(t, echo, withKeys(k1))
		b := newTransport(t, echo, withKeys(k1))
		for _, pair := range [][2]*Transport{{a, b}, {b, a}} {
			resp, err := pair[0].Call(ctx, pair[1].Addr(), "echo", []byte("hi"))
			require.NoError(t, err)
			require.Equal(t, "hi", string(resp))
		}
	})

	t.Run("wrong key is refused on both sides", func(t *testing.T) {
		a := newTransport(t, echo, withKeys(k1))
		b := newTransport(t, echo, withKeys(k2))
		_, err := a.Call(ctx, b.Addr(), "echo", nil)
		require.ErrorIs(t, err, ErrHandshake)
		require.Equal(t, uint64(1), a.Stats().HandshakeFailures)
		require.Eventually(t, func() bool { return b.Stats().HandshakeFailures == 1 }, 5*time.Second, 5*time.Millisecond)
		require.Zero(t, b.Stats().FramesIn, "nothing may get through")
	})

	t.Run("plaintext peer is refused", func(t *testing.T) {
		a := newTransport(t, echo, withKeys(k1))
		plain := newTransport(t, echo)
		_, err := plain.Call(ctx, a.Addr(), "echo", nil)
		require.ErrorIs(t, err, ErrHandshake)
		_, err = a.Call(ctx, plain.Addr(), "echo", nil)
		require.ErrorIs(t, err, ErrHandshake)
		require.Zero(t, a.Stats().FramesIn+plain.Stats().FramesIn)
	})

	t.Run("rotation", func(t *testing.T) {
		rotated := newTransport(t, echo, withKeys(k2, k1)) // already on the new key
		old := newTransport(t, echo, withKeys(k1))         // not yet told about it
		for _, pair := range [][2]*Transport{{rotated, old}, {old, rotated}} {
			resp, err := pair[0].Call(ctx, pair[1].Addr(), "echo", []byte("hi"))
			require.NoError(t, err)
			require.Equal(t, "hi", string(resp))
		}
	})
}

// The payload must not cross the wire in clear when a key or TLS is set;
// the plaintext case shows that the recording would catch it.
func TestPayloadIsNotOnTheWire(t *testing.T) {
	secret := []byte("the secret session attribute 0123456789")
	ca := testcerts.NewCA(t)
	for _, tc := range []struct {
		name    string
		opts    func(*testing.T) func(*Config)
		inClear bool
	}{
		{"plaintext", func(*testing.T) func(*Config) { return func(*Config) {} }, true},
		{"cluster key", func(*testing.T) func(*Config) { return withKeys(key(1)) }, false},
		{"TLS", func(t *testing.T) func(*Config) { return withTLS(ca.TLSConfig(t)) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTransport(t, echo, tc.opts(t))
			cli := newTransport(t, echo, tc.opts(t))
			proxy := newRecordingProxy(t, srv.Addr())
			resp, err := cli.Call(testCtx(t), proxy.ln.Addr().String(), "echo", secret)
			require.NoError(t, err)
			require.Equal(t, secret, resp)
			toServer, toClient := proxy.recorded()
			require.Equal(t, tc.inClear, bytes.Contains(toServer, secret))
			require.Equal(t, tc.inClear, bytes.Contains(toClient, secret))
		})
	}
}

// A recorded handshake replayed to the listener must be refused: its
// proofs were made for the listener's nonce of that other connection.
func TestHandshakeReplayIsRefused(t *testing.T) {
	srv := newTransport(t, echo, withKeys(key(1)))
	cli := newTransport(t, echo, withKeys(key(1)))
	proxy := newRecordingProxy(t, srv.Addr())
	_, err := cli.Call(testCtx(t), proxy.ln.Addr().String(), "echo", nil)
	require.NoError(t, err)

	toServer, _ := proxy.recorded()
	cliHello := helloSize + 1 + len(cli.cfg.Name)
	opening := toServer[:cliHello+1+noiseMsg1]
	conn, br := rawPeer(t, srv.Addr(), nil)
	_, err = conn.Write(opening)
	require.NoError(t, err)
	_, _, err = readHello(br)
	require.NoError(t, err)
	reply := make([]byte, 2+noiseMsg2)
	_, err = io.ReadFull(br, reply)
	require.NoError(t, err)
	require.Equal(t, statusRefused, reply[0])
	require.Eventually(t, func() bool { return srv.Stats().HandshakeFailures == 1 }, 5*time.Second, 5*time.Millisecond)
}

// keySource is a KeySource whose keys the test changes, as a keyring's.
type keySource struct {
	mu   sync.Mutex
	keys [][]byte
}

func (s *keySource) get() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys
}

func (s *keySource) set(keys ...[]byte) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func withKeySource(s *keySource) func(*Config) {
	return func(c *Config) { c.Keys, c.KeySource = s.get(), s.get }
}

// KeysChanged after a new primary moves the node's own connections to it
// without failing a call; after a removal it closes every connection made
// with the removed key, and the holder of that key cannot come back.
func TestKeysChanged(t *testing.T) {
	k1, k2 := key(1), key(2)
	ctx := testCtx(t)
	srcA, srcB := &keySource{keys: [][]byte{k1}}, &keySource{keys: [][]byte{k1}}
	a := newTransport(t, echo, withKeySource(srcA))
	b := newTransport(t, echo, withKeySource(srcB))
	holder := newTransport(t, echo, withKeys(k1))
	call := func(from *Transport) error {
		_, err := from.Call(ctx, b.Addr(), "echo", []byte("hi"))
		return err
	}
	require.NoError(t, call(a))
	require.NoError(t, call(holder))
	require.Equal(t, k1, a.peerConn(b.Addr()).key)

	// A new primary: a's connection made with k1 takes no new call.
	srcA.set(k2, k1)
	srcB.set(k2, k1)
	require.Zero(t, a.KeysChanged(), "nothing closed at once")
	require.Zero(t, b.KeysChanged())
	require.NoError(t, call(a))
	require.Equal(t, k2, a.peerConn(b.Addr()).key, "the call dialled with the new primary")
	require.Eventually(t, func() bool { return a.Stats().OpenConns == 1 }, 5*time.Second, 5*time.Millisecond,
		"the janitor closed the retired connection")
	require.Eventually(t, func() bool { return b.Stats().OpenConns == 2 }, 5*time.Second, 5*time.Millisecond,
		"b saw the retired connection close (it keeps a's new one and the holder's)")

	// k1 removed: the holder's connection is closed, and it is refused.
	srcA.set(k2)
	srcB.set(k2)
	require.Equal(t, 1, b.KeysChanged(), "the holder's connection")
	require.Equal(t, uint64(1), b.Stats().KeyDrops)
	require.Error(t, call(holder), "its connection is closed")
	require.ErrorIs(t, call(holder), ErrHandshake)
	require.NoError(t, call(a))
}

// A connection whose handshake used a key that was removed before it
// started is refused: KeysChanged ran too early to see it.
func TestKeyRemovedDuringHandshake(t *testing.T) {
	k1, k2 := key(1), key(2)
	var reads atomic.Int32
	srv := newTransport(t, echo, func(c *Config) {
		c.Keys = [][]byte{k1}
		c.KeySource = func() [][]byte {
			if reads.Add(1) == 1 {
				return [][]byte{k1} // the handshake's read
			}
			return [][]byte{k2} // removed right after
		}
	})
	cli := newTransport(t, echo, withKeys(k1))
	_, err := cli.Call(testCtx(t), srv.Addr(), "echo", nil)
	require.ErrorIs(t, err, ErrPeerUnreachable)
	require.Eventually(t, func() bool { return srv.Stats().KeyDrops == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, srv.Stats().OpenConns)
	require.Zero(t, srv.Stats().FramesIn)
}
