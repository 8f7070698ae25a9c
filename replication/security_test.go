package replication

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/internal/testcerts"
	"github.com/troupe-go/troupe/internal/transport"
	"github.com/troupe-go/troupe/internal/wire"
	"github.com/troupe-go/troupe/membership"
)

// rogue starts a transport that is not a cluster member and returns a
// function that sends a harmless request to addr with it.
func rogue(t *testing.T, cfg transport.Config) func(addr string) error {
	t.Helper()
	cfg.BindAddr = clustertest.Host(9) + ":0"
	tr, err := transport.New(testCtx(t), cfg, transport.HandlerFunc(func(context.Context, string, string, []byte) ([]byte, error) { return nil, nil }))
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Shutdown() })
	body, err := wire.Marshal(takeReq{From: "rogue", Key: newKey()})
	require.NoError(t, err)
	return func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := tr.Call(ctx, addr, channelName+"/"+methodTake, body)
		return err
	}
}

// TestClusterKeyRefusesStrangers: with a cluster key, the cluster's
// transport uses it, sessions replicate over it, and a peer with another
// key or none is refused.
func TestClusterKeyRefusesStrangers(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	c := startSessions(t, 2, nil, func(_ int, cfg *membership.Config) { cfg.SecretKeys = [][]byte{k1} })
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, h, "v", "secret")
	_, sec := c.byID(h.Route().Secondary)
	require.Equal(t, "secret", string(sec.s.lookup(h.e.key).state().attrs.val("v")))

	require.ErrorIs(t, rogue(t, transport.Config{Keys: [][]byte{k2}})(a.c.TransportAddr()), transport.ErrHandshake)
	require.ErrorIs(t, rogue(t, transport.Config{})(a.c.TransportAddr()), transport.ErrHandshake)
	require.NoError(t, rogue(t, transport.Config{Keys: [][]byte{k1}})(a.c.TransportAddr()), "the right key is accepted")
}

// TestTLSRefusesStrangers: with membership.Config.TLS, sessions
// replicate over mutual TLS, and a peer with a certificate from another
// CA, or none, is refused.
func TestTLSRefusesStrangers(t *testing.T) {
	ca, other := testcerts.NewCA(t), testcerts.NewCA(t)
	c := startSessions(t, 2, nil, func(_ int, cfg *membership.Config) { cfg.TLS = ca.TLSConfig(t) })
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, h, "v", "over tls")
	_, sec := c.byID(h.Route().Secondary)
	require.Equal(t, "over tls", string(sec.s.lookup(h.e.key).state().attrs.val("v")))

	require.ErrorIs(t, rogue(t, transport.Config{TLS: other.TLSConfig(t)})(a.c.TransportAddr()), transport.ErrHandshake)
	require.ErrorIs(t, rogue(t, transport.Config{})(a.c.TransportAddr()), transport.ErrHandshake)
	require.NoError(t, rogue(t, transport.Config{TLS: ca.TLSConfig(t)})(a.c.TransportAddr()), "a certificate from the cluster CA is accepted")
}

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, Options{}.Validate())
	for name, o := range map[string]Options{
		"mode":  {Mode: 7},
		"queue": {AsyncQueue: -1},
		"idle":  {IdleTimeout: time.Millisecond},
		"lease": {LeaseTerm: -time.Second},
		"size":  {MaxSessionSize: 10},
		"huge":  {MaxSessionSize: 1 << 30},
	} {
		require.ErrorIs(t, o.Validate(), ErrInvalidOptions, name)
	}
	_, err := NewSessions(context.Background(), nil, Options{})
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.Equal(t, DefaultMaxSessionSize+64<<10, Options{}.MinMessageSize())
	require.LessOrEqual(t, Options{}.MinMessageSize(), membership.DefaultMaxMessageSize, "the defaults fit")
	require.Equal(t, maxSessionSize+64<<10, Options{MaxSessionSize: maxSessionSize}.MinMessageSize())
	require.Equal(t, "sync", ModeSync.String())
	require.Equal(t, "async", ModeAsync.String())
}

// TestOneSessionsPerCluster: a cluster carries one Sessions at a time; a
// new one may start once the previous one is shut down.
func TestOneSessionsPerCluster(t *testing.T) {
	c := startSessions(t, 1, nil)
	n := c.nodes[0]
	_, err := NewSessions(testCtx(t), n.c, Options{})
	require.ErrorIs(t, err, membership.ErrChannelExists)
	n.s.Shutdown()
	s, err := NewSessions(testCtx(t), n.c, Options{})
	require.NoError(t, err)
	defer s.Shutdown()
	require.NotEqual(t, n.s.inc, s.inc)
	h, err := s.Create(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, s.NodeID(), h.Route().Primary)
}
