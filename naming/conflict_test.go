package naming

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Two nodes bind the same (non-clusterable) name at the same moment, many
// times: every node ends with the same single winner, and the loser, and
// only the loser, gets a conflict event.
func TestConflictConcurrentBindsOneWinner(t *testing.T) {
	t.Parallel()
	const rounds = 20
	tc := startTrees(t, 3) // node-2 only watches
	c := ctx(t)

	conflicts := make([]chan Event, 2)
	for i := range 2 {
		w, err := tc.trees[i].Watch(c, "race")
		require.NoError(t, err)
		t.Cleanup(w.Close)
		conflicts[i] = make(chan Event, rounds)
		go func() {
			for ev := range w.Events() {
				if ev.Type == EventConflict {
					conflicts[i] <- ev
				}
			}
		}()
	}

	wins := map[string]int{}
	for r := range rounds {
		name := fmt.Sprintf("race/%d", r)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		if r%2 == 0 {
			// At once: the same millisecond usually, where the node name
			// breaks the tie.
			for i := range 2 {
				wg.Go(func() {
					<-start
					errs[i] = tc.trees[i].Bind(c, name, []byte(tc.trees[i].self))
				})
			}
			close(start)
			wg.Wait()
		} else {
			// node-1 a few milliseconds first, well within gossip delay:
			// its earlier clock wins.
			errs[1] = tc.trees[1].Bind(c, name, []byte(tc.trees[1].self))
			time.Sleep(3 * time.Millisecond) // spacing the two binds, not waiting for a condition
			errs[0] = tc.trees[0].Bind(c, name, []byte(tc.trees[0].self))
		}
		winner := sameWinner(t, tc.trees, name)
		converged(t, tc.trees)
		wins[winner]++
		if errs[0] != nil || errs[1] != nil {
			// One node saw the other's binding first: an ordinary refusal.
			for i, err := range errs {
				if err != nil {
					require.ErrorIs(t, err, ErrNameBound)
					require.NotEqual(t, tc.trees[i].self, winner)
				}
			}
			continue
		}
		loser := 0
		if winner == tc.trees[0].self {
			loser = 1
		}
		select {
		case ev := <-conflicts[loser]:
			assert.Equal(t, name, ev.Name)
			assert.Equal(t, winner, ev.Binding.Offers[0].Node)
			assert.Equal(t, tc.trees[loser].self, ev.Old.Offers[0].Node)
		case <-time.After(waitTimeout):
			t.Fatalf("%s: loser %s was not told", name, tc.trees[loser].self)
		}
		// The loser's record is gone from its own state too.
		eventually(t, tc.trees[loser:loser+1], "loser record removed", func(tr *Tree) bool {
			_, err := tr.Lookup(name)
			return err == nil && tr.Stats().Conflicts > 0
		})
	}
	for i := range 2 {
		select {
		case ev := <-conflicts[i]:
			t.Fatalf("unexpected extra conflict on %s: %+v", tc.trees[i].self, ev)
		default:
		}
	}
	t.Logf("winners over %d rounds: %v", rounds, wins)
}

// Concurrent binds of one cluster-scoped name: last writer wins
// everywhere, and the node whose write was replaced is told.
func TestConflictClusterScopedLastWriterWins(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 2)
	c := ctx(t)
	w, err := tc.trees[0].Watch(c, "cfg")
	require.NoError(t, err)
	t.Cleanup(w.Close)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { errs[i] = tc.trees[i].Bind(c, "cfg/x", []byte(tc.trees[i].self), WithScope(ClusterScope)) })
	}
	wg.Wait()
	converged(t, tc.trees)
	b, err := tc.trees[0].Lookup("cfg/x")
	require.NoError(t, err)
	t.Logf("winner %s, errors %v", b.Offers[0].Node, errs)
	if errs[0] == nil && errs[1] == nil && b.Offers[0].Node != tc.trees[0].self {
		for ev := range w.Events() {
			if ev.Type == EventConflict {
				require.Equal(t, "cfg/x", ev.Name)
				break
			}
		}
	}
}

// A node-scoped bind racing a cluster-scoped bind of the same name.
func TestConflictAcrossScopes(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 2)
	c := ctx(t)
	var wg sync.WaitGroup
	wg.Go(func() { _ = tc.trees[0].Bind(c, "mixed", []byte("node"), Clusterable()) })
	wg.Go(func() { _ = tc.trees[1].Bind(c, "mixed", []byte("cluster"), WithScope(ClusterScope)) })
	wg.Wait()
	converged(t, tc.trees)
	b, err := tc.trees[0].Lookup("mixed")
	require.NoError(t, err)
	require.Len(t, b.Offers, 1)
}

// sameWinner waits until every tree shows name with one offer, the same
// node's, whose value is that node's name, and returns the node.
func sameWinner(t *testing.T, trees []*Tree, name string) string {
	t.Helper()
	var winner string
	deadline := time.Now().Add(waitTimeout)
	for {
		winner = ""
		ok := true
		for _, tr := range trees {
			b, err := tr.Lookup(name)
			if err != nil || len(b.Offers) != 1 || string(b.Offers[0].Value) != b.Offers[0].Node ||
				(winner != "" && b.Offers[0].Node != winner) {
				ok = false
				break
			}
			winner = b.Offers[0].Node
		}
		if ok {
			return winner
		}
		if time.Now().After(deadline) {
			for _, tr := range trees {
				t.Logf("%s:\n%s", tr.self, dump(tr))
			}
			t.Fatalf("%s: no single winner everywhere within %s", name, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}
