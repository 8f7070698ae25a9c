package transport

import (
	"bytes"
	"crypto/tls"
	"io"
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
	opening := toServer[:cliHello+1+proofSize]
	conn, br := rawPeer(t, srv.Addr(), nil)
	_, err = conn.Write(opening)
	require.NoError(t, err)
	_, _, err = readHello(br)
	require.NoError(t, err)
	reply := make([]byte, 1+proofSize)
	_, err = io.ReadFull(br, reply)
	require.NoError(t, err)
	require.Equal(t, statusRefused, reply[0])
	require.Eventually(t, func() bool { return srv.Stats().HandshakeFailures == 1 }, 5*time.Second, 5*time.Millisecond)
}
