package membership_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/internal/transport"
	"github.com/troupe-go/troupe/membership"
)

var (
	key1 = []byte("0123456789abcdef")
	key2 = []byte("fedcba9876543210fedcba9876543210")
)

func TestKeysWrongKeyCannotJoin(t *testing.T) {
	tc := clustertest.Start(t, 2, func(_ int, c *membership.Config) { c.SecretKeys = [][]byte{key1} })
	tc.WaitMembers(2)

	cfg := clustertest.Config(t, tc.Name, 2, tc.Net)
	cfg.SecretKeys = [][]byte{key2}
	n, err := membership.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(n.Shutdown)
	_, err = n.Join(context.Background(), tc.Nodes[0].Addr())
	require.ErrorIs(t, err, membership.ErrNoPeers)
	require.Equal(t, 1, n.NumMembers())

	cfg = clustertest.Config(t, tc.Name, 3, tc.Net) // no key at all
	plain, err := membership.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(plain.Shutdown)
	_, err = plain.Join(context.Background(), tc.Nodes[0].Addr())
	require.ErrorIs(t, err, membership.ErrNoPeers)
	for _, m := range tc.Nodes {
		require.Equal(t, 2, m.NumMembers())
	}

	// Another cluster name on the same port is refused the same way,
	// even with the right key: the name is memberlist's label.
	cfg = clustertest.Config(t, tc.Name+"-other", 4, tc.Net)
	cfg.SecretKeys = [][]byte{key1}
	other, err := membership.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(other.Shutdown)
	_, err = other.Join(context.Background(), tc.Nodes[0].Addr())
	require.ErrorIs(t, err, membership.ErrNoPeers)
}

// Rotation in three steps on every node, with the cluster staying whole;
// a node that still has only the old key is cut off at the end.
func TestKeysRotation(t *testing.T) {
	tc := clustertest.Start(t, 3, func(_ int, c *membership.Config) { c.SecretKeys = [][]byte{key1} })
	tc.WaitMembers(3)
	for _, n := range tc.Nodes {
		require.NoError(t, n.InstallKey(key2))
	}
	for _, n := range tc.Nodes {
		require.NoError(t, n.UseKey(key2))
	}
	for _, n := range tc.Nodes {
		require.NoError(t, n.RemoveKey(key1))
		require.Equal(t, [][]byte{key2}, n.Keys())
	}
	// A new node with the new key joins; one with the retired key cannot.
	fresh := tc.Add(func(c *membership.Config) {
		c.SecretKeys = [][]byte{key2}
		c.WellKnown = []string{tc.Nodes[0].Addr()}
	})
	tc.WaitMembers(4)
	require.Equal(t, 4, fresh.NumMembers())

	cfg := clustertest.Config(t, tc.Name, 9, tc.Net)
	cfg.SecretKeys = [][]byte{key1}
	old, err := membership.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(old.Shutdown)
	_, err = old.Join(context.Background(), tc.Nodes[1].Addr())
	require.ErrorIs(t, err, membership.ErrNoPeers)
}

func TestKeysNeedEncryptionAtStart(t *testing.T) {
	tc := clustertest.New(t)
	tc.Add(func(c *membership.Config) { c.SecretKeys, c.Insecure = nil, true })
	require.ErrorIs(t, tc.Nodes[0].InstallKey(key1), membership.ErrInvalidConfig)
	require.Nil(t, tc.Nodes[0].Keys())
}

func TestShutdownIsIdempotentAndFinal(t *testing.T) {
	tc := clustertest.Start(t, 1)
	n := tc.Nodes[0]
	sub := n.Subscribe()
	n.Shutdown()
	n.Shutdown()
	require.Equal(t, membership.ClusterShutdown, n.State())
	select {
	case _, ok := <-drain(sub.Events()):
		require.False(t, ok)
	case <-time.After(clustertest.Timeout):
		t.Fatal("subscription not closed by Shutdown")
	}
	_, err := n.Channel("x", membership.HandlerFuncs{})
	require.ErrorIs(t, err, membership.ErrShutdown)
	_, err = n.Join(context.Background(), "127.0.0.1:1")
	require.ErrorIs(t, err, membership.ErrShutdown)
	require.ErrorIs(t, n.UpdateMeta(context.Background(), func(*membership.Meta) {}), membership.ErrShutdown)
	require.ErrorIs(t, n.Leave(context.Background()), membership.ErrShutdown)
	late := n.Subscribe()
	_, ok := <-drain(late.Events())
	require.False(t, ok, "a subscription after Shutdown is closed at once")
}

// drain skips buffered events and returns a channel that yields once the
// events channel is closed.
func drain(c <-chan membership.Event) <-chan membership.Event {
	out := make(chan membership.Event)
	go func() {
		for range c {
		}
		close(out)
	}()
	return out
}

// A key rotation reaches the transport everywhere at once: once the old
// key is removed on every node, connections made with it are closed and
// a new one is refused, members keep calling each other without a failed
// call, and a node that holds only the new key joins and calls.
func TestKeysRotationReachesTheTransport(t *testing.T) {
	tc := clustertest.Start(t, 3, func(_ int, c *membership.Config) { c.SecretKeys = [][]byte{key1} })
	tc.WaitMembers(3)
	chans := registerCalls(t, tc.Nodes)
	ctx := context.Background()
	callAll := func(chans []*membership.Channel, nodes []*membership.Cluster) {
		t.Helper()
		for i, ch := range chans {
			for j, n := range nodes {
				if i == j {
					continue
				}
				resp, err := ch.Call(ctx, n.Name(), "echo", []byte("hi"))
				require.NoError(t, err, "%s calls %s", nodes[i].Name(), n.Name())
				require.Equal(t, nodes[i].Name()+":hi", string(resp))
			}
		}
	}
	callAll(chans, tc.Nodes) // connections made with key1, both ways

	// Someone who holds key1 connects before the rotation.
	holder := newOutsider(t, "holder", key1)
	target := tc.Nodes[0].TransportAddr()
	resp, err := holder.Call(ctx, target, "rpc/echo", []byte("before"))
	require.NoError(t, err)
	require.Equal(t, "holder:before", string(resp))

	for _, n := range tc.Nodes {
		require.NoError(t, n.InstallKey(key2))
	}
	for _, n := range tc.Nodes {
		require.NoError(t, n.UseKey(key2))
	}
	for _, n := range tc.Nodes {
		require.NoError(t, n.RemoveKey(key1))
	}

	// Its connection was closed: the first call after the rotation fails
	// (on the closed connection, or on the refused redial), the next is
	// refused in the handshake. A fresh connection with key1 is refused
	// too, and one with only key2 works.
	_, err = holder.Call(ctx, target, "rpc/echo", []byte("after"))
	require.Error(t, err, "the connection made with the removed key is still open")
	_, err = holder.Call(ctx, target, "rpc/echo", []byte("after"))
	require.ErrorIs(t, err, transport.ErrHandshake)
	_, err = newOutsider(t, "old", key1).Call(ctx, target, "rpc/echo", nil)
	require.ErrorIs(t, err, transport.ErrHandshake)
	resp, err = newOutsider(t, "new", key2).Call(ctx, target, "rpc/echo", []byte("x"))
	require.NoError(t, err)
	require.Equal(t, "new:x", string(resp))

	// Members rotated their own connections at UseKey: no call fails.
	callAll(chans, tc.Nodes)

	fresh := tc.Add(func(c *membership.Config) {
		c.SecretKeys = [][]byte{key2}
		c.WellKnown = []string{tc.Nodes[1].Addr()}
	})
	tc.WaitMembers(4)
	chans = append(chans, registerCalls(t, []*membership.Cluster{fresh})...)
	callAll(chans, tc.Nodes)
}

// A stranger without the cluster key cannot call or send to a member:
// neither a process that dials a member's transport with another key (or
// none), nor a former member left behind by a rotation, which still
// knows the members' names and addresses. Its attempts fail with
// ErrUnreachable wrapping the refused handshake; nothing reaches a
// handler.
func TestKeysStrangerCannotCallOrSend(t *testing.T) {
	tc := clustertest.Start(t, 3, func(_ int, c *membership.Config) { c.SecretKeys = [][]byte{key1} })
	tc.WaitMembers(3)
	heard := make([]*inbox, len(tc.Nodes))
	var chans []*membership.Channel
	for i, n := range tc.Nodes {
		heard[i] = newInbox("")
		ch, err := n.Channel("rpc", calls{heard[i].handler().(membership.HandlerFuncs)})
		require.NoError(t, err)
		t.Cleanup(ch.Close)
		chans = append(chans, ch)
	}
	ctx := context.Background()
	target := tc.Nodes[0]

	for _, keys := range [][][]byte{{key2}, nil} {
		_, err := newOutsider(t, "stranger", keys...).Call(ctx, target.TransportAddr(), "rpc/echo", nil)
		require.ErrorIs(t, err, transport.ErrHandshake, "keys %x", keys)
	}

	// node-2 talks to the others, then is left out of a rotation.
	left := chans[2]
	for i, n := range tc.Nodes[:2] {
		_, err := left.Call(ctx, n.Name(), "echo", nil)
		require.NoError(t, err)
		require.NoError(t, left.Send(ctx, n.Name(), []byte("before")))
		require.Eventually(t, func() bool { from, ok := heard[i].has("before"); return ok && from == "node-2" },
			clustertest.Timeout, time.Millisecond)
	}
	for _, step := range []func(*membership.Cluster) error{
		func(n *membership.Cluster) error { return n.InstallKey(key2) },
		func(n *membership.Cluster) error { return n.UseKey(key2) },
		func(n *membership.Cluster) error { return n.RemoveKey(key1) },
	} {
		for _, n := range tc.Nodes[:2] {
			require.NoError(t, step(n))
		}
	}
	// Nothing gets through; within a few tries the redial is refused.
	for _, n := range tc.Nodes[:2] {
		requireRefused(t, func() error { _, err := left.Call(ctx, n.Name(), "echo", nil); return err })
		requireRefused(t, func() error { return left.Send(ctx, n.Name(), []byte("after")) })
	}
	for i := range 2 {
		_, got := heard[i].has("after")
		require.False(t, got, "a message of the stranger reached node-%d", i)
	}
}

// requireRefused calls try until it is refused in the handshake, which
// must happen within a few tries: the first may meet the connection that
// the member has just closed. A Send on it may return before it learns
// so; a call fails. Every failure is ErrUnreachable.
func requireRefused(t *testing.T, try func() error) {
	t.Helper()
	for range 5 {
		err := try()
		if err == nil {
			continue
		}
		require.ErrorIs(t, err, membership.ErrUnreachable)
		if errors.Is(err, transport.ErrHandshake) {
			return
		}
	}
	t.Fatal("not refused in the handshake within 5 tries")
}

// registerCalls registers channel "rpc" with the calls handler on each
// node and returns the channels.
func registerCalls(t *testing.T, nodes []*membership.Cluster) []*membership.Channel {
	t.Helper()
	var chans []*membership.Channel
	for _, n := range nodes {
		ch, err := n.Channel("rpc", calls{})
		require.NoError(t, err)
		t.Cleanup(ch.Close)
		chans = append(chans, ch)
	}
	return chans
}

// newOutsider starts a bare transport on 127.0.0.1 (where no test node
// lives) holding keys (none: plaintext), to dial members' transports as
// a process outside the cluster would.
func newOutsider(t *testing.T, name string, keys ...[]byte) *transport.Transport {
	t.Helper()
	tr, err := transport.New(context.Background(), transport.Config{
		Name:     name,
		BindAddr: "127.0.0.1:0",
		Keys:     keys,
		Logger:   clustertest.Logger(t, name),
	}, transport.HandlerFunc(func(context.Context, string, string, []byte) ([]byte, error) { return nil, nil }))
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Shutdown() })
	return tr
}
