package membership_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
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
	tc := clustertest.Start(t, 1)
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
