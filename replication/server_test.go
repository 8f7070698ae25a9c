package replication

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/wire"
)

// TestInlineApplyDeclinesALockedCopy: the transport's reader goroutine
// serves a change only when the copy's lock is free; otherwise the change
// goes to a handler goroutine, which waits for the lock. A batch declined
// half way is served again whole, its applied half answered as repeats.
func TestInlineApplyDeclinesALockedCopy(t *testing.T) {
	c := startSessions(t, 2, nil)
	a := c.nodes[0]
	h1, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	h2, err := a.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, a, h1, "x", "1")
	set(t, a, h2, "x", "1")
	_, sec := c.byID(h1.Route().Secondary)
	srv := server{sec.s}

	// A Save whose secondary copy is locked waits for it, then lands.
	e1 := sec.s.lookup(h1.e.key)
	require.NoError(t, e1.lock(testCtx(t)))
	done := make(chan error, 1)
	go func() {
		require.NoError(t, h1.Set("x", []byte("2")))
		done <- a.s.Save(testCtx(t), h1)
	}()
	require.Never(t, func() bool { return len(done) > 0 }, 100*time.Millisecond, 5*time.Millisecond,
		"the Save waits for the secondary's lock")
	e1.unlock()
	require.NoError(t, <-done)
	require.Equal(t, "2", e1.state().attrs.val("x"))

	// Directly: a batch of changes to both sessions, the second locked.
	st1, st2 := a.s.lookup(h1.e.key).state(), a.s.lookup(h2.e.key).state()
	item := func(key string, st state, v string) applyReq {
		return applyReq{Key: key, Epoch: st.epoch, Members: st.members, Base: st.version,
			Version: st.version + 1, Set: attrsOf(map[string][]byte{"x": []byte(v)})}
	}
	body, err := wire.Marshal(batchReq{From: a.s.self, Items: []applyReq{
		item(h1.e.key, st1, "3"), item(h2.e.key, st2, "3"),
	}})
	require.NoError(t, err)
	e2 := sec.s.lookup(h2.e.key)
	require.NoError(t, e2.lock(testCtx(t)))
	_, ok, err := srv.TryHandleCall(context.Background(), a.s.self, methodBatch, body)
	require.NoError(t, err)
	require.False(t, ok, "declined: the second session's copy is locked")
	require.Equal(t, "3", e1.state().attrs.val("x"), "the first change was applied before the decline")
	e2.unlock()

	resp, err := srv.HandleCall(context.Background(), a.s.self, methodBatch, body)
	require.NoError(t, err)
	var r batchReply
	require.NoError(t, wire.Unmarshal(resp, &r))
	require.Equal(t, []status{stOK, stOK}, r.St)
	require.Equal(t, "3", e1.state().attrs.val("x"))
	require.Equal(t, "3", e2.state().attrs.val("x"))
	require.Equal(t, st1.version+1, e1.state().version, "applied once")
}
