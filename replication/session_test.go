package replication

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/internal/transport"
	"github.com/troupe-go/troupe/internal/wire"
	"github.com/troupe-go/troupe/membership"
)

func TestAttributes(t *testing.T) {
	c := startSessions(t, 2, nil)
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	require.False(t, h.Changed())
	require.NoError(t, h.Set("a", []byte("1")))
	require.NoError(t, h.Set("b", []byte("2")))
	require.NoError(t, h.Set("empty", nil))
	require.True(t, h.Changed())
	require.NoError(t, a.s.Save(testCtx(t), h))
	require.False(t, h.Changed())

	h.Delete("a")
	require.NoError(t, h.Set("c", []byte("3")))
	require.Equal(t, []string{"b", "c", "empty"}, h.Keys())
	require.NoError(t, a.s.Save(testCtx(t), h))

	h2, err := a.s.Get(testCtx(t), h.ID())
	require.NoError(t, err)
	require.Equal(t, []string{"b", "c", "empty"}, h2.Keys())
	v, ok := h2.Get("empty")
	require.True(t, ok)
	require.Empty(t, v)
	_, ok = h2.Get("a")
	require.False(t, ok)
	require.Equal(t, len("b2c3empty"), h2.Size())

	// The secondary saw the same two versions.
	_, sec := c.byID(h.Route().Secondary)
	st := sec.s.lookup(h.e.key).state()
	require.Equal(t, uint64(2), st.version)
	require.Equal(t, h2.base, st.attrs)

	// A Save with no changes sends nothing.
	saves := a.s.Stats().Saves
	require.NoError(t, a.s.Save(testCtx(t), h2))
	require.Equal(t, saves, a.s.Stats().Saves)
}

type cart struct {
	Items []string
	Total float64
}

func TestTypedValues(t *testing.T) {
	c := startSessions(t, 2, nil)
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	require.NoError(t, SetValue(h, "cart", cart{Items: []string{"book", "pen"}, Total: 12.5}))
	require.NoError(t, SetValue(h, "visits", 3))
	require.NoError(t, a.s.Save(testCtx(t), h))

	_, sec := c.byID(h.Route().Secondary)
	h2, err := sec.s.Get(testCtx(t), h.ID()) // moves it to the secondary
	require.NoError(t, err)
	got, ok, err := GetValue[cart](h2, "cart")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, cart{Items: []string{"book", "pen"}, Total: 12.5}, got)
	n, ok, err := GetValue[int](h2, "visits")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 3, n)
	_, ok, err = GetValue[int](h2, "missing")
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, h2.Set("garbage", []byte{0xc1}))
	_, _, err = GetValue[int](h2, "garbage")
	require.Error(t, err)
}

// TestConcurrentRequestsOneSession: many requests on one session at once,
// on its primary, each with its own handle: every Save lands, attribute
// by attribute, and the secondary ends with the same state.
func TestConcurrentRequestsOneSession(t *testing.T) {
	c := startSessions(t, 2, nil)
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	id := h.ID()
	const workers, rounds = 16, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				hh, err := a.s.Get(testCtx(t), id)
				if !assertNoError(t, err) {
					return
				}
				_, _ = hh.Get("shared")
				_ = hh.Set(fmt.Sprintf("w%d", w), []byte(strconv.Itoa(r)))
				_ = hh.Set("shared", []byte(strconv.Itoa(w)))
				if !assertNoError(t, a.s.Save(testCtx(t), hh)) {
					return
				}
			}
		})
		// The same handle, shared by goroutines, is safe too.
		wg.Go(func() {
			for r := range rounds {
				_ = h.Set(fmt.Sprintf("h%d", w), []byte(strconv.Itoa(r)))
				_, _ = h.Get("shared")
				_ = h.Keys()
			}
		})
	}
	wg.Wait()
	require.NoError(t, a.s.Save(testCtx(t), h))
	final, err := a.s.Get(testCtx(t), id)
	require.NoError(t, err)
	for w := range workers {
		v, _ := final.Get(fmt.Sprintf("w%d", w))
		require.Equal(t, strconv.Itoa(rounds-1), string(v))
		v, _ = final.Get(fmt.Sprintf("h%d", w))
		require.Equal(t, strconv.Itoa(rounds-1), string(v))
	}
	_, sec := c.byID(h.Route().Secondary)
	st := sec.s.lookup(h.e.key).state()
	require.Equal(t, final.base, st.attrs)
	require.Equal(t, h.e.state().version, st.version)
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestTooLarge(t *testing.T) {
	const limit = 4 << 10
	c := startSessions(t, 2, func(_ int, o *Options) { o.MaxSessionSize = limit })
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	require.ErrorIs(t, h.Set("big", make([]byte, limit)), ErrTooLarge)
	require.False(t, h.Changed(), "a refused Set changes nothing")
	require.NoError(t, h.Set("half", make([]byte, limit/2)))
	require.NoError(t, a.s.Save(testCtx(t), h))

	// Two handles each within the limit, together beyond it: the second
	// Save is refused and changes nothing.
	h1, err := a.s.Get(testCtx(t), h.ID())
	require.NoError(t, err)
	h2, err := a.s.Get(testCtx(t), h.ID())
	require.NoError(t, err)
	require.NoError(t, h1.Set("x", make([]byte, limit/3)))
	require.NoError(t, h2.Set("y", make([]byte, limit/3)))
	require.NoError(t, a.s.Save(testCtx(t), h1))
	require.ErrorIs(t, a.s.Save(testCtx(t), h2), ErrTooLarge)
	st := h.e.state()
	require.LessOrEqual(t, st.size, limit)
	_, sec := c.byID(h.Route().Secondary)
	require.Equal(t, st.version, sec.s.lookup(h.e.key).state().version)

	require.ErrorIs(t, SetValue(h1, "v", make([]byte, limit)), ErrTooLarge)
}

// TestExpiry: an idle session expires on its primary and on its
// secondary; one that is only read (never saved) stays alive on both,
// because the primary tells the secondary it was used.
func TestExpiry(t *testing.T) {
	const idle = 400 * time.Millisecond
	c := startSessions(t, 2, func(_ int, o *Options) { o.IdleTimeout = idle })
	a := c.nodes[0]
	idleOne, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, idleOne, "v", "x")
	busy, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, busy, "v", "y")

	deadline := time.Now().Add(4 * idle)
	for time.Now().Before(deadline) {
		_, err := a.s.Get(testCtx(t), busy.ID())
		require.NoError(t, err)
		time.Sleep(idle / 8) // a client's pace, not a wait for a condition
	}
	pr, sc := c.holders(idleOne.e.key)
	require.Zero(t, pr+sc, "idle session still held")
	_, err = a.s.Get(testCtx(t), idleOne.ID())
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorIs(t, a.s.Save(testCtx(t), idleOne), ErrStale)

	pr, sc = c.holders(busy.e.key)
	require.Equal(t, 1, pr)
	require.Equal(t, 1, sc, "the secondary expired a session that was in use")
	require.Eventually(t, func() bool {
		pr, sc := c.holders(busy.e.key)
		return pr+sc == 0
	}, clustertest.Timeout, 20*time.Millisecond)
	require.NotZero(t, a.s.Stats().Expired)
}

func TestInvalidate(t *testing.T) {
	c := startSessions(t, 3, nil)
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, h, "v", "x")
	secIdx, _ := c.byID(h.Route().Secondary)
	third := c.nodes[3-secIdx]

	// Invalidated from a node that holds no copy.
	require.NoError(t, third.s.Invalidate(testCtx(t), h.ID()))
	pr, sc := c.holders(h.e.key)
	require.Zero(t, pr+sc)
	for _, n := range c.nodes {
		_, err := n.s.Get(testCtx(t), h.ID())
		require.ErrorIs(t, err, ErrNotFound, n.c.Name())
	}
	require.ErrorIs(t, a.s.Save(testCtx(t), h), ErrStale)
	require.NoError(t, a.s.Invalidate(testCtx(t), h.ID()), "twice is fine")

	// Invalidated on the primary.
	h2, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, h2, "v", "x")
	require.NoError(t, a.s.Invalidate(testCtx(t), h2.ID()))
	pr, sc = c.holders(h2.e.key)
	require.Zero(t, pr+sc)
}

func TestMalformedIDs(t *testing.T) {
	c := startSessions(t, 1, nil)
	s := c.nodes[0].s
	for _, id := range []string{"", "x", "a!b!c", newKey() + "!" + s.NodeID()} {
		_, err := s.Get(testCtx(t), id)
		require.ErrorIs(t, err, ErrInvalidID)
		require.ErrorIs(t, s.Invalidate(testCtx(t), id), ErrInvalidID)
	}
	// Well formed, unknown.
	_, err := s.Get(testCtx(t), ID{Key: newKey(), Primary: s.NodeID()}.String())
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.Get(testCtx(t), ID{Key: newKey(), Primary: NodeID("nobody")}.String())
	require.ErrorIs(t, err, ErrNotFound)
}

// TestBadRequests sends malformed requests to a node's sessions channel,
// from a member and from a process with the cluster key that is not one:
// each gets an error (the stranger's are refused before they are read),
// and the node keeps working.
func TestBadRequests(t *testing.T) {
	c := startSessions(t, 2, nil)
	a, b := c.nodes[0], c.nodes[1]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	rogue, err := transport.New(testCtx(t), transport.Config{BindAddr: clustertest.Host(5) + ":0", Keys: [][]byte{clustertest.Key(c.tc.Name)}},
		transport.HandlerFunc(func(context.Context, string, string, []byte) ([]byte, error) { return nil, nil }))
	require.NoError(t, err)
	defer rogue.Shutdown()
	ok, _ := wire.Marshal(takeReq{Key: newKey()})
	badKey, _ := wire.Marshal(applyReq{Key: "nope", Epoch: 1})
	noEpoch, _ := wire.Marshal(applyReq{Key: newKey()})
	relayForStranger, _ := wire.Marshal(takeReq{From: "x", Key: newKey()})
	cases := []struct{ method, body string }{
		{methodApply, "garbage"},
		{methodApply, ""},
		{methodApply, string(badKey)},
		{methodApply, string(noEpoch)},
		{methodBatch, "\x92\x01"},
		{methodTake, "\xc1"},
		{methodTake, string(relayForStranger)},
		{methodResolve, "\x81\xa1i\x91\x80"},
		{"nonsense", string(ok)},
	}
	refused := a.s.Stats().Refused
	for _, tc := range cases {
		_, err := b.s.ch.Call(testCtx(t), a.c.Name(), tc.method, []byte(tc.body))
		var merr *membership.RemoteError
		require.ErrorAs(t, err, &merr, "%s %q", tc.method, tc.body)
		_, err = rogue.Call(testCtx(t), a.c.TransportAddr(), channelName+"/"+tc.method, []byte(tc.body))
		var rerr *transport.RemoteError
		require.ErrorAs(t, err, &rerr, "%s %q", tc.method, tc.body)
	}
	require.Equal(t, refused+uint64(len(cases)), a.s.Stats().Refused,
		"refused: the stranger's requests (its unknown method is answered before that) and the member's relay for a stranger")
	set(t, a, h, "v", "still fine")
	_, v := mustGet(t, a, h.ID(), "v")
	require.Equal(t, "still fine", v)
}

func TestAsyncMode(t *testing.T) {
	c := startSessions(t, 2, func(_ int, o *Options) {
		o.Mode = ModeAsync
		o.AsyncQueue = 4
	})
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	for i := range 200 {
		require.NoError(t, h.Set("n", []byte(strconv.Itoa(i))))
		require.NoError(t, a.s.Save(testCtx(t), h))
	}
	_, sec := c.byID(h.Route().Secondary)
	require.Eventually(t, func() bool {
		st := sec.s.lookup(h.e.key).state()
		return st.version == 200 && string(st.attrs.val("n")) == "199"
	}, clustertest.Timeout, 5*time.Millisecond)

	// A secondary that lost its copy asks for a full one.
	sec.s.drop(sec.s.lookup(h.e.key), "test")
	require.NoError(t, h.Set("n", []byte("after loss")))
	require.NoError(t, a.s.Save(testCtx(t), h))
	require.Eventually(t, func() bool {
		e := sec.s.lookup(h.e.key)
		return e != nil && string(e.state().attrs.val("n")) == "after loss"
	}, clustertest.Timeout, 5*time.Millisecond)
}

// TestGapFullCopy: in sync mode, a secondary that missed changes asks for
// a full copy within the Save.
func TestGapFullCopy(t *testing.T) {
	c := startSessions(t, 2, nil)
	a := c.nodes[0]
	h, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, h, "a", "1")
	_, sec := c.byID(h.Route().Secondary)
	sec.s.drop(sec.s.lookup(h.e.key), "test")
	full := a.s.Stats().FullCopies
	set(t, a, h, "b", "2")
	require.Equal(t, full+1, a.s.Stats().FullCopies)
	st := sec.s.lookup(h.e.key).state()
	require.Equal(t, "1", string(st.attrs.val("a")))
	require.Equal(t, "2", string(st.attrs.val("b")))
}

// TestGroupCommitCancelled: Saves that give up while their change waits
// in a group commit, or is in flight, leave neither a stuck queue nor a
// secondary that diverges from its primary.
func TestGroupCommitCancelled(t *testing.T) {
	c := startSessions(t, 2, nil)
	a := c.nodes[0]
	handles := make([]*Session, 32)
	for i := range handles {
		h, err := a.s.Create(testCtx(t))
		require.NoError(t, err)
		handles[i] = h
	}
	var wg sync.WaitGroup
	for i, h := range handles {
		wg.Go(func() {
			for j := range 50 {
				_ = h.Set("v", []byte(fmt.Sprintf("%d-%d", i, j)))
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(j%7)*50*time.Microsecond)
				_ = a.s.Save(ctx, h)
				cancel()
			}
		})
	}
	wg.Wait()
	_, sec := c.byID(handles[0].Route().Secondary)
	for i, h := range handles {
		require.NoError(t, h.Set("v", []byte(fmt.Sprintf("final-%d", i))))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		require.NoError(t, a.s.Save(ctx, h))
		cancel()
		p, s := h.e.state(), sec.s.lookup(h.e.key).state()
		require.Equal(t, p.attrs, s.attrs)
		require.Equal(t, p.version, s.version)
	}
}

// TestMovedOnCopyNotTakenBack: a node that held a session's copy and
// saw the session move on (it handed it over, or the new primary dropped
// its copy) answers a verify or a change from the old primary that the
// sender's copy is stale, rather than "unknown" and "gap", on which the
// old primary would copy its outdated session back here in full and go
// on serving it (a primary cut off by a partition, after the heal). A
// full copy from a new primary brings the session back.
func TestMovedOnCopyNotTakenBack(t *testing.T) {
	c := startSessions(t, 2, nil)
	old, s := c.nodes[0], c.nodes[1].s
	key := newKey()
	s.movedTo(key, "node-x")

	st, _ := s.verifyOne(testCtx(t), &verifyReq{From: old.c.Name(), Key: key, Epoch: 1, Members: 2})
	require.Equal(t, stStale, st)
	st, _, _ = s.applyOne(testCtx(t), &applyReq{From: old.c.Name(), Key: key, Epoch: 1, Members: 2, Base: 1, Version: 2}, true)
	require.Equal(t, stStale, st)

	st, _, _ = s.applyOne(testCtx(t), &applyReq{From: old.c.Name(), Key: key, Epoch: 3, Members: 2, Version: 2, Full: true}, true)
	require.Equal(t, stOK, st, "a full copy from a new primary")
	require.False(t, s.moved.has(key))
	st, _ = s.verifyOne(testCtx(t), &verifyReq{From: old.c.Name(), Key: key, Epoch: 3, Members: 2})
	require.Equal(t, stOK, st)
}

// TestOlderForkDoesNotReplaceAcknowledgedWrites: a full copy that ranks
// higher but holds an older version than a primary copy here (a fork
// from an older point of the session) does not demote that copy: in
// ModeSync its version holds acknowledged writes only. The sender is told
// its copy is stale.
func TestOlderForkDoesNotReplaceAcknowledgedWrites(t *testing.T) {
	c := startSessions(t, 2, nil)
	p, h := c.sessionOn(t, 0, "1")
	other := c.nodes[1]
	set(t, p, h, "v", "2")
	st := h.e.state()
	require.Equal(t, rolePrimary, st.role)

	fork := &applyReq{From: other.c.Name(), Key: h.e.key, Epoch: st.epoch + 1, Members: 2, Version: st.version - 1,
		Set: attrsOf(map[string][]byte{"v": []byte("1")}), Full: true}
	got, _, _ := p.s.applyOne(testCtx(t), fork, true)
	require.Equal(t, stStale, got)
	require.Equal(t, rolePrimary, h.e.state().role)
	_, v := mustGet(t, p, h.ID(), "v")
	require.Equal(t, "2", v)
}
