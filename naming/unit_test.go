package naming

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/membership"
)

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"ejb/OrderService":    "ejb/OrderService",
		"/jms/queues/Orders/": "jms/queues/Orders",
		"a":                   "a",
		"x.y-z_~:@+=,!$*":     "x.y-z_~:@+=,!$*",
	} {
		got, err := NormalizeName(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got)
	}
	for in, why := range map[string]string{
		"":                             "empty name",
		"/":                            "empty name",
		"a//b":                         "empty segment",
		"a/./b":                        `"." segment`,
		"a/../b":                       `".." segment`,
		"a b":                          "character ' '",
		"a/é":                          "character",
		"a\x00":                        "character",
		strings.Repeat("a", 600):       "bytes, the limit is 512",
		strings.Repeat("a", 129):       "the limit is 128",
		strings.Repeat("a/", 33) + "b": "more than 32 segments",
	} {
		_, err := NormalizeName(in)
		require.ErrorIs(t, err, ErrInvalidName, "%q", in)
		assert.Contains(t, err.Error(), why, "%q", in)
	}
	p, err := normalize("", true)
	require.NoError(t, err)
	assert.Equal(t, "", p)
	assert.True(t, under("jms/q", "jms"))
	assert.True(t, under("jms", "jms"))
	assert.False(t, under("jmsx", "jms"))
	assert.True(t, under("anything", ""))
}

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, Options{}.Validate())
	o, err := Options{}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, DefaultChannel, o.Channel)
	assert.Equal(t, DefaultMaxValueSize, o.MaxValueSize)
	assert.Equal(t, DefaultTombstoneTTL, o.TombstoneTTL)
	in := Options{MaxValueSize: -1, MaxBindings: -1, TombstoneTTL: time.Millisecond, WatchBuffer: -1, FetchTimeout: time.Millisecond, Channel: strings.Repeat("c", 65)}
	err = in.Validate()
	require.ErrorIs(t, err, ErrInvalidOptions)
	for _, want := range []string{"MaxValueSize", "MaxBindings", "TombstoneTTL", "WatchBuffer", "FetchTimeout", "Channel"} {
		assert.Contains(t, err.Error(), want)
	}
	assert.Equal(t, -1, in.MaxValueSize, "Validate does not modify the caller's Options")
	_, err = New(nil, Options{})
	require.ErrorIs(t, err, ErrInvalidOptions)
}

func TestHLC(t *testing.T) {
	wall := time.Unix(1_800_000_000, 0)
	c := hlc{now: func() time.Time { return wall }}
	a := c.Now()
	b := c.Now()
	require.Greater(t, b, a, "same millisecond: the logical part advances")
	assert.Equal(t, wall.UnixMilli(), tsTime(b).UnixMilli())
	wall = wall.Add(-time.Second) // the wall clock steps back
	require.Greater(t, c.Now(), b, "never backwards")
	remote := physical(wall.Add(30 * time.Second))
	c.Observe(remote)
	require.Greater(t, c.Now(), remote, "after a received timestamp")
	far := physical(wall.Add(time.Hour))
	c.Observe(far)
	require.Less(t, c.Now(), far, "a timestamp beyond maxDrift does not drag the clock")
}

func TestPolicies(t *testing.T) {
	cands := func() []Candidate {
		return []Candidate{
			{Offer: Offer{Node: "a"}, Member: membership.Member{Meta: membership.Meta{Role: "manager", Weight: 1}}},
			{Offer: Offer{Node: "b"}, Member: membership.Member{Meta: membership.Meta{Role: "worker", Weight: 0}}, Local: true},
			{Offer: Offer{Node: "c"}, Member: membership.Member{Meta: membership.Meta{Role: "worker", Weight: 3}}},
		}
	}
	rr := RoundRobin()
	for i := range 6 {
		assert.Equal(t, i%3, rr.Pick(cands()))
	}
	assert.Equal(t, 0, First().Pick(cands()))
	assert.Equal(t, 1, PreferLocal(First()).Pick(cands()))
	got := map[int]int{}
	for range 4000 {
		got[Weighted().Pick(cands())]++
	}
	assert.Zero(t, got[1], "weight 0 is never picked while others have weight")
	assert.InDelta(t, 1000, got[0], 150)
	assert.InDelta(t, 3000, got[2], 150)
	zero := cands()
	for i := range zero {
		zero[i].Member.Weight = 0
	}
	assert.GreaterOrEqual(t, Weighted().Pick(zero), 0)
	c := cands()
	i := WithRole("worker", First()).Pick(c)
	assert.Equal(t, "b", c[i].Node)
	assert.Equal(t, -1, WithRole("none", First()).Pick(cands()))
	s := NewSticky(PolicyFunc(func(c []Candidate) int { return len(c) - 1 }))
	c = cands()
	assert.Equal(t, "c", c[s.Pick(c)].Node)
	c = cands()[:2]
	assert.Equal(t, "b", c[s.Pick(c)].Node, "sticky node gone: fallback")
	assert.Equal(t, "b", s.Node())
	s.Reset()
	assert.Equal(t, "", s.Node())
}

// Two cores bind the same name at the same HLC: the lower node name wins
// on both, and only the loser sees a conflict.
func TestCoreConflictDeterministic(t *testing.T) {
	n := newNet(t, "a", "b")
	require.NoError(t, n.bind("b", opBind, "x", "from-b"))
	require.NoError(t, n.bind("a", opBind, "x", "from-a"))
	n.run()
	assert.Equal(t, "a=from-a", n.lookup("a", "x"))
	assert.Equal(t, "a=from-a", n.lookup("b", "x"))
	var conflicts []string
	for _, name := range []string{"a", "b"} {
		for _, ev := range n.cores[name].events {
			if ev.Type == EventConflict {
				conflicts = append(conflicts, name)
			}
		}
	}
	assert.Equal(t, []string{"b"}, conflicts)
	assert.Nil(t, n.cores["b"].owners["b"].recs["x"], "the loser removed its record")
}

// An owner's newer incarnation replaces every record of the older one.
func TestCoreNewIncarnationDropsOldRecords(t *testing.T) {
	n := newNet(t, "a", "b")
	require.NoError(t, n.bind("b", opBind, "old", "1"))
	n.run()
	require.Equal(t, "b=1", n.lookup("a", "old"))
	// b restarts without a is told of the failure (fast restart).
	n.advance(time.Second)
	delete(n.cores, "b")
	n.start("b")
	n.cores["b"].memberEvent(membership.Event{Type: membership.EventJoin, Member: membership.Member{Name: "a"}})
	require.NoError(t, n.bind("b", opBind, "new", "2"))
	n.run()
	assert.Equal(t, "", n.lookup("a", "old"))
	assert.Equal(t, "b=2", n.lookup("a", "new"))
	// A late message of the old incarnation is refused.
	old := changeMsg{I: 1, R: recWire{N: "old", V: 9, X: []byte("zombie")}}
	n.cores["a"].handle("b", msgChange, &old)
	assert.Equal(t, "", n.lookup("a", "old"))
}

// Deltas: a node that missed changes fetches only those since its
// version; one too far behind (tombstones forgotten) gets a full
// snapshot.
func TestCoreDeltaAndFullFetch(t *testing.T) {
	n := newNet(t, "a", "b")
	for i := range 10 {
		require.NoError(t, n.bind("a", opBind, "n"+string(rune('0'+i)), "v"))
	}
	n.run()
	n.cut[[2]string{"a", "b"}] = true
	require.NoError(t, n.bind("a", opUnbind, "n0", ""))
	require.NoError(t, n.bind("a", opRebind, "n1", "w"))
	n.run()
	delete(n.cut, [2]string{"a", "b"})
	n.advance(3 * time.Second) // beacons
	n.collect()
	n.run()
	assert.Equal(t, coreDigest(n.cores["a"]), coreDigest(n.cores["b"]))
	// Far behind: more deletions than a owner remembers.
	n.cut[[2]string{"a", "b"}] = true
	for i := range maxTombs + 10 {
		name := "t" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()
		require.NoError(t, n.bind("a", opBind, name, "v"))
		require.NoError(t, n.bind("a", opUnbind, name, ""))
	}
	require.NoError(t, n.bind("a", opUnbind, "n2", ""))
	n.run()
	require.Greater(t, n.cores["a"].owners["a"].floor, uint64(0))
	delete(n.cut, [2]string{"a", "b"})
	n.pushPull("a", "b")
	assert.Equal(t, coreDigest(n.cores["a"]), coreDigest(n.cores["b"]))
	assert.Equal(t, "", n.lookup("b", "n2"))
}

// Cluster-scoped tombstones are collected after the TTL, and an expired
// tombstone arriving late does not come back.
func TestCoreTombstoneCollection(t *testing.T) {
	n := newNet(t, "a", "b")
	require.NoError(t, n.bind("a", opBind, "c", "1", WithScope(ClusterScope)))
	n.run()
	require.NoError(t, n.bind("b", opUnbind, "c", ""))
	n.run()
	require.Equal(t, 1, n.cores["a"].ncrecs, "a tombstone")
	n.advance(DefaultTombstoneTTL + gcInterval + time.Second)
	assert.Equal(t, 0, n.cores["a"].ncrecs)
	assert.Equal(t, 0, n.cores["b"].ncrecs)
	old := crecWire{N: "c", W: "b", B: 1, T: physical(n.now.Add(-DefaultTombstoneTTL - time.Minute)), D: true}
	assert.False(t, n.cores["a"].applyCrec(&old))
	assert.Equal(t, "", n.lookup("a", "c"))
}

// Two concurrent Binds of one cluster-scoped name in the same
// millisecond: the higher (timestamp, writer) wins on both, and the other
// writer is told even though both lineages have the same timestamp.
func TestCoreClusterScopedConcurrentBindsSameMillisecond(t *testing.T) {
	n := newNet(t, "a", "b")
	require.NoError(t, n.bind("a", opBind, "cfg/x", "a", WithScope(ClusterScope)))
	require.NoError(t, n.bind("b", opBind, "cfg/x", "b", WithScope(ClusterScope)))
	n.run()
	assert.Equal(t, "b=b", n.lookup("a", "cfg/x"))
	assert.Equal(t, "b=b", n.lookup("b", "cfg/x"))
	var conflicts []string
	for _, name := range []string{"a", "b"} {
		for _, ev := range n.cores[name].events {
			if ev.Type == EventConflict {
				conflicts = append(conflicts, name)
			}
		}
	}
	assert.Equal(t, []string{"a"}, conflicts)
	// A Rebind of the same lineage by another node is not a conflict.
	require.NoError(t, n.bind("a", opRebind, "cfg/x", "a2", WithScope(ClusterScope)))
	n.cores["b"].events = nil
	n.run()
	for _, ev := range n.cores["b"].events {
		assert.NotEqual(t, EventConflict, ev.Type)
	}
	assert.Equal(t, "a=a2", n.lookup("b", "cfg/x"))
}

// A record of an owner that the owner deleted, relayed by a third node
// (as a confirmation's answer relays the winner's record) after a full
// fetch that carried no tombstones, sits at a version this copy already
// counts: a delta since that version cannot remove it. The digests still
// differ, and the copy asks for the owner's full set, which repairs it.
func TestCoreStaleRelayedRecordRepaired(t *testing.T) {
	n := newNet(t, "a", "b")
	require.NoError(t, n.bind("a", opBind, "k", "v"))
	n.run()
	stale := *n.cores["b"].owners["a"].recs["k"]
	require.NoError(t, n.bind("a", opUnbind, "k", ""))
	require.NoError(t, n.bind("a", opBind, "j", "v"))
	n.run()
	// b declares a failed, then a comes back: a full fetch, no tombstones.
	b := n.cores["b"]
	b.memberEvent(membership.Event{Type: membership.EventFail, Member: membership.Member{Name: "a"}})
	b.memberEvent(membership.Event{Type: membership.EventJoin, Member: membership.Member{Name: "a"}})
	n.run()
	require.Equal(t, "", n.lookup("b", "k"))
	// A third node relays a's old record.
	b.onChange("a", &changeMsg{I: n.cores["a"].inc, R: recWire{N: stale.name, V: stale.ver, B: stale.born, T: stale.ts, X: stale.value}})
	require.Equal(t, "a=v", n.lookup("b", "k"), "the test relays a record b takes")

	n.pushPull("a", "b")
	assert.Equal(t, "", n.lookup("b", "k"), "the deleted record stays")
	assert.Equal(t, coreDigest(n.cores["a"]), coreDigest(b))
}

// A confirmed Bind asks every member who comes first for the name. A
// member that missed another node's unbind (across a cut) still answers
// with that node's old record; the node itself answers without it. Its
// own answer wins: the old record is not the winner.
func TestCoreConfirmIgnoresAStaleCopysRecord(t *testing.T) {
	n := missedUnbind(t)

	require.NoError(t, n.bind("b", opBind, "k", "w"))
	require.NoError(t, n.confirm("b", "k"), "a's unbound record, as c still shows it, beat b")
}

// A node whose copy missed another node's unbind shows that node's old
// binding, which refuses its own Bind there. Its confirmation hears from
// the node itself that the binding is gone: it is told to bind again,
// and its copy no longer shows the old binding (Pins would answer with
// it), so that the next Bind succeeds.
func TestCoreConfirmDropsARecordItsOwnerNoLongerHolds(t *testing.T) {
	n := missedUnbind(t)
	clear(n.cut)

	n.requireBindAgain(t, "c")
	n.run()
	require.NoError(t, n.confirm("c", "k"))
	require.Equal(t, "c=w", n.lookup("b", "k"))
}

// A member that restarted fast (no peer saw it fail) holds none of its
// old incarnation's bindings, though peers still show them. A confirmed
// Bind that asks who holds the name hears the old binding from those
// peers and nothing from the node itself: the node's own answer wins, so
// the old binding, with its smaller token, is never named the winner
// (the fault suite saw a pin's token go backwards so). The asker's copy
// drops the old incarnation's records too, on the node's answer.
func TestCoreConfirmIgnoresARestartedNodesOldBinding(t *testing.T) {
	n := newNet(t, "a", "b", "c")
	require.NoError(t, n.bind("a", opBind, "k", "v"))
	n.run()
	n.advance(time.Second)
	delete(n.cores, "a")
	n.start("a")
	for _, m := range []string{"a", "b", "c"} {
		n.cores["a"].memberEvent(membership.Event{Type: membership.EventJoin, Member: membership.Member{Name: m}})
	}
	require.Equal(t, "a=v", n.lookup("b", "k"), "b still shows the old incarnation's binding")
	require.Equal(t, "a=v", n.lookup("c", "k"))

	n.requireBindAgain(t, "b")
}

// requireBindAgain checks that node's copy refuses a Bind of k for a's
// stale binding, that the confirmation does not name a the winner but
// tells node to bind again, having dropped that binding, and that the
// Bind then succeeds.
func (n *simNet) requireBindAgain(t *testing.T, node string) {
	t.Helper()
	require.ErrorIs(t, n.bind(node, opBind, "k", "w"), ErrNameBound, "the copy refuses the bind")
	err := n.confirm(node, "k")
	var bound *BoundError
	require.False(t, errors.As(err, &bound), "a's stale binding was named the winner: %v", err)
	require.ErrorIs(t, err, ErrNameBound, "told to bind again")
	require.Equal(t, "", n.lookup(node, "k"), "the asker still shows a's stale binding")
	require.NoError(t, n.bind(node, opBind, "k", "w"), "the bind again")
}

// confirm has node confirm who holds name, asking every node of the
// network, and returns the confirmation's result.
func (n *simNet) confirm(node, name string) error {
	c := n.cores[node]
	done := make(chan error, 1)
	c.startConfirm(name, n.names(), done)
	n.run()
	var got []error
	for _, r := range c.answers {
		if r.done == done {
			got = append(got, r.err)
		}
	}
	require.Len(n.t, got, 1, "the confirmation did not settle")
	return got[0]
}

// missedUnbind is a network of a, b and c in which a bound k and unbound
// it while its messages to c were cut: c still shows a's binding. The
// cut stays.
func missedUnbind(t *testing.T) *simNet {
	t.Helper()
	n := newNet(t, "a", "b", "c")
	require.NoError(t, n.bind("a", opBind, "k", "v"))
	n.run()
	n.cut[[2]string{"a", "c"}] = true
	require.NoError(t, n.bind("a", opUnbind, "k", ""))
	n.run()
	require.Equal(t, "a=v", n.lookup("c", "k"), "the test's c missed the unbind")
	return n
}
