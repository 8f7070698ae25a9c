package replication

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAttrsWith checks the sorted-slice merge against a map model.
func TestAttrsWith(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string][]byte{}
	var a attrs
	for round := range 2000 {
		set := map[string][]byte{}
		var del []string
		for range rng.IntN(4) {
			set[fmt.Sprintf("k%02d", rng.IntN(30))] = []byte(fmt.Sprint(round))
		}
		for range rng.IntN(3) {
			del = append(del, fmt.Sprintf("k%02d", rng.IntN(30)))
		}
		before, snapshot := a, slices.Clone(a)
		a = a.with(attrsOf(set), del)
		require.Equal(t, snapshot, before, "with must not modify its receiver")
		for _, k := range del {
			delete(model, k)
		}
		maps.Copy(model, set)
		require.Equal(t, len(model), len(a))
		require.True(t, slices.IsSortedFunc(a, func(x, y attr) int {
			if x.k < y.k {
				return -1
			}
			return 1
		}))
		for k, v := range model {
			got, ok := a.get(k)
			require.True(t, ok)
			require.Equal(t, v, got)
		}
		require.Equal(t, model, a.toMap())
	}
	_, ok := a.get("missing")
	require.False(t, ok)
}

// queued counts the callers waiting for e's write lock.
func (e *entry) queued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for w := e.waiters; w != nil; w = w.next {
		n++
	}
	return n
}

// The write-lock tests are about the lock's logic; no network is involved.

func TestWriteLockHandsOverInOrder(t *testing.T) {
	e := newEntry("k", 0)
	require.NoError(t, e.lock(context.Background()))
	require.False(t, e.tryLock(), "held")
	got := make(chan int, 3)
	for i := range 3 {
		go func() {
			if e.lock(context.Background()) == nil {
				got <- i
			}
		}()
		require.Eventually(t, func() bool { return e.queued() == i+1 }, 5*time.Second, time.Millisecond)
	}
	for want := range 3 {
		e.unlock()
		select {
		case i := <-got:
			require.Equal(t, want, i, "waiters get the lock in the order they came")
		case <-time.After(5 * time.Second):
			t.Fatal("no waiter got the lock")
		}
	}
	e.unlock()
	require.True(t, e.tryLock(), "free after the last unlock")
	e.unlock()
}

func TestWriteLockGivesUp(t *testing.T) {
	e := newEntry("k", 0)
	require.True(t, e.tryLock())
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("caller gone")
	done := make(chan error, 1)
	go func() { done <- e.lock(ctx) }()
	require.Eventually(t, func() bool { return e.queued() == 1 }, 5*time.Second, time.Millisecond)
	cancel(cause)
	require.ErrorIs(t, <-done, cause)
	require.Zero(t, e.queued(), "a waiter that gave up leaves the queue")

	require.ErrorIs(t, e.lockWithin(context.Background(), time.Millisecond), errBusy)
	require.Zero(t, e.queued())
	e.unlock()
	require.True(t, e.tryLock(), "free: nobody was handed the lock")
	e.unlock()
}

// TestWriteLockExcludes races lockers that give up against unlocks that
// hand the lock over: every holder is alone (the race detector watches
// the counter) and the lock ends free.
func TestWriteLockExcludes(t *testing.T) {
	e := newEntry("k", 0)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		holders int
		counter int
	)
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%3)*time.Microsecond*50)
				var err error
				if g%2 == 0 {
					err = e.lock(ctx)
				} else {
					err = e.lockWithin(ctx, time.Duration(i%4)*20*time.Microsecond)
				}
				cancel()
				if err != nil {
					continue
				}
				counter++ // guarded by the write lock alone
				mu.Lock()
				holders++
				mu.Unlock()
				e.unlock()
			}
		})
	}
	wg.Wait()
	require.Equal(t, holders, counter)
	require.Positive(t, counter)
	require.Zero(t, e.queued())
	require.True(t, e.tryLock(), "free at the end")
}
