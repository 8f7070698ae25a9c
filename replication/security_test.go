package replication

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
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
	// The right key passes the handshake; the request then reaches the
	// sessions, which refuse a sender that is not a member.
	requireRefused(t, rogue(t, transport.Config{Keys: [][]byte{k1}})(a.c.TransportAddr()))
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
	// A certificate from the cluster CA passes the handshake; the
	// sessions refuse a sender that is not a member.
	requireRefused(t, rogue(t, transport.Config{TLS: ca.TLSConfig(t)})(a.c.TransportAddr()))
}

// requireRefused checks that a rogue's request passed the handshake and
// was refused by the sessions handler.
func requireRefused(t *testing.T, err error) {
	t.Helper()
	var rerr *transport.RemoteError
	require.ErrorAs(t, err, &rerr)
	require.Equal(t, uint64(slices.Index(callErrors, errRefused)+1), rerr.Code, rerr.Message)
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

// logBuffer collects log lines from many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: level}))
}

// insecure makes a member run without cluster keys.
func insecure(_ int, c *membership.Config) {
	c.SecretKeys = nil
	c.Insecure = true
}

// TestSessionsRefuseAnInsecureCluster: over a cluster without keys,
// NewSessions refuses unless Options.Insecure says so, with an error that
// tells how to fix it; with Insecure it starts and logs one Warn. Over a
// cluster with keys it logs no Warn.
func TestSessionsRefuseAnInsecureCluster(t *testing.T) {
	tc := clustertest.Start(t, 1, insecure)
	_, err := NewSessions(testCtx(t), tc.Nodes[0], Options{})
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.Contains(t, err.Error(), "SecretKeys")
	require.Contains(t, err.Error(), "head -c 32 /dev/urandom | base64")
	require.Contains(t, err.Error(), "Insecure")

	var logs logBuffer
	s, err := NewSessions(testCtx(t), tc.Nodes[0], Options{Insecure: true, Logger: logs.logger(slog.LevelInfo)})
	require.NoError(t, err)
	s.Shutdown()
	require.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())

	keyed := clustertest.Start(t, 1)
	var quiet logBuffer
	s, err = NewSessions(testCtx(t), keyed.Nodes[0], Options{Logger: quiet.logger(slog.LevelInfo)})
	require.NoError(t, err)
	s.Shutdown()
	require.NotContains(t, quiet.String(), "level=WARN")
}

// TestForgedTouchDoesNotBlockFailover: after a primary crashes, a live
// member that sends touches naming the crashed node, and a process with
// the cluster key whose handshake claims the crashed node's name, do not
// extend the crashed node's lease: its secondary promotes the session.
func TestForgedTouchDoesNotBlockFailover(t *testing.T) {
	c := startSessions(t, 3, nil)
	p := c.nodes[0]
	h, err := p.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, p, h, "user", "ana")
	secIdx, sec := c.byID(h.Route().Secondary)
	third := c.nodes[3-secIdx]
	victim := p.c.Name()
	body, err := wire.Marshal(touchReq{From: victim, Keys: []string{h.e.key}})
	require.NoError(t, err)

	impostor, err := transport.New(testCtx(t), transport.Config{
		Name: victim, BindAddr: clustertest.Host(9) + ":0", Keys: [][]byte{clustertest.Key(c.tc.Name)},
	}, transport.HandlerFunc(func(context.Context, string, string, []byte) ([]byte, error) { return nil, nil }))
	require.NoError(t, err)
	t.Cleanup(func() { _ = impostor.Shutdown() })

	c.crash(0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = third.s.ch.Call(ctx, sec.c.Name(), methodTouch, body)
			_, _ = impostor.Call(ctx, sec.c.TransportAddr(), channelName+"/"+methodTouch, body)
			cancel()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	require.Eventually(t, func() bool {
		e := sec.s.lookup(h.e.key)
		return e != nil && e.state().role == rolePrimary
	}, 20*time.Second, 20*time.Millisecond, "forged touches kept the crashed primary's lease alive:%s", c.describe(h.e.key))
	_, v := mustGet(t, sec, h.ID(), "user")
	require.Equal(t, "ana", v)
	require.NotZero(t, sec.s.Stats().Refused, "the forged touches were refused and counted")
}

// TestRequestsClaimingAnotherSenderAreRefused: a full copy from a live
// member that names another member, or a made-up node, as its sender is
// refused, and so is one from a process with the cluster key that is not
// a member; the same copy naming its real sender is applied.
func TestRequestsClaimingAnotherSenderAreRefused(t *testing.T) {
	c := startSessions(t, 3, nil)
	a, b, m := c.nodes[0], c.nodes[1], c.nodes[2]
	forged := func(from string) []byte {
		body, err := wire.Marshal(&applyReq{From: from, Inc: 1, Key: newKey(), Epoch: 9, Members: 3, Version: 1, Full: true,
			Set: attrsOf(map[string][]byte{"user": []byte("admin")})})
		require.NoError(t, err)
		return body
	}
	keyOf := func(body []byte) string {
		var r applyReq
		require.NoError(t, wire.Unmarshal(body, &r))
		return r.Key
	}
	for _, from := range []string{a.c.Name(), "made-up"} {
		body := forged(from)
		_, err := m.s.ch.Call(testCtx(t), b.c.Name(), methodApply, body)
		require.Error(t, err, "a copy from %s claiming to be %s", m.c.Name(), from)
		require.Nil(t, b.s.lookup(keyOf(body)), "the forged copy was not stored")
	}

	stranger, err := transport.New(testCtx(t), transport.Config{
		Name: "stranger", BindAddr: clustertest.Host(9) + ":0", Keys: [][]byte{clustertest.Key(c.tc.Name)},
	}, transport.HandlerFunc(func(context.Context, string, string, []byte) ([]byte, error) { return nil, nil }))
	require.NoError(t, err)
	defer stranger.Shutdown()
	body := forged("stranger")
	_, err = stranger.Call(testCtx(t), b.c.TransportAddr(), channelName+"/"+methodApply, body)
	require.Error(t, err, "a process that is not a member")
	require.Nil(t, b.s.lookup(keyOf(body)))
	require.GreaterOrEqual(t, b.s.Stats().Refused, uint64(3))

	body = forged(m.c.Name())
	_, err = m.s.ch.Call(testCtx(t), b.c.Name(), methodApply, body)
	require.NoError(t, err, "the sender's own name")
	e := b.s.lookup(keyOf(body))
	require.NotNil(t, e)
	require.Equal(t, m.c.Name(), e.state().primary)
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestPeerTableHoldsOnlyMembers: 20,000 requests whose handshake names
// and From fields are random 4 KiB strings add nothing to the table of
// peers, and the heap does not grow with them.
func TestPeerTableHoldsOnlyMembers(t *testing.T) {
	c := startSessions(t, 2, nil)
	a, b := c.nodes[0], c.nodes[1]
	srv := server{b.s}
	peers := func() int {
		b.s.pmu.Lock()
		defer b.s.pmu.Unlock()
		return len(b.s.pmu.peers)
	}
	before, heap0 := peers(), heapInUse()
	name := make([]byte, 4<<10)
	for i := range 20000 {
		_, _ = crand.Read(name)
		from := string(name)
		if i%2 == 1 {
			from = a.c.Name() // a member, with a forged body
		}
		body, err := wire.Marshal(touchReq{From: string(name), Keys: []string{newKey()}})
		require.NoError(t, err)
		_, _ = srv.HandleCall(context.Background(), from, methodTouch, body)
	}
	heap1 := heapInUse()
	require.Equal(t, before, peers(), "requests added peers")
	require.Less(t, int64(heap1)-int64(heap0), int64(8<<20), "the heap grew by %d bytes", int64(heap1)-int64(heap0))
	require.GreaterOrEqual(t, b.s.Stats().Refused, uint64(20000))
}

// TestMaxSessionSizeOnReceive: a secondary refuses, and counts, a full
// copy or a change that makes a session larger than its MaxSessionSize.
func TestMaxSessionSizeOnReceive(t *testing.T) {
	c := startSessions(t, 2, func(_ int, o *Options) { o.MaxSessionSize = 4 << 10 })
	a := c.nodes[0]
	b := c.nodes[1]

	big := &applyReq{From: a.c.Name(), Inc: a.s.inc, Key: newKey(), Epoch: 1, Members: 2, Version: 1, Full: true,
		Set: attrsOf(map[string][]byte{"big": make([]byte, 64<<10)})}
	var r reply
	_, err := a.s.call(testCtx(t), b.c.Name(), methodApply, big, &r)
	require.True(t, err != nil || r.St != stOK, "a full copy beyond MaxSessionSize was accepted")
	require.Nil(t, b.s.lookup(big.Key))
	require.Equal(t, uint64(1), b.s.Stats().Refused)

	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, h, "small", "x")
	st := h.e.state()
	require.Equal(t, b.c.Name(), st.secondary)
	grow := &applyReq{From: a.c.Name(), Inc: a.s.inc, Key: h.e.key, Epoch: st.epoch, Members: st.members,
		Base: st.version, Version: st.version + 1, Set: attrsOf(map[string][]byte{"big": make([]byte, 8<<10)})}
	r = reply{}
	_, err = a.s.call(testCtx(t), b.c.Name(), methodApply, grow, &r)
	require.True(t, err != nil || r.St != stOK, "a change beyond MaxSessionSize was accepted")
	require.Equal(t, st.version, b.s.lookup(h.e.key).state().version, "the secondary's copy is unchanged")
	require.Equal(t, uint64(2), b.s.Stats().Refused)
	set(t, a, h, "small", "y") // legitimate saves go on
}
