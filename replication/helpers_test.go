package replication

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

// testLease is short so that takeovers that wait for a lease stay quick.
const testLease = 200 * time.Millisecond

// node is one in-process member with its sessions.
type node struct {
	c *membership.Cluster
	s *Sessions
}

// testCluster is n members with sessions, sharing one fault network.
type testCluster struct {
	t     testing.TB
	tc    *clustertest.Cluster
	nodes []*node
	opts  func(i int, o *Options)
}

// startSessions starts n members joined through node 0 (mutate may
// adjust each member's config: keys, TLS), waits until they all see each
// other, starts Sessions on each (opts may adjust each node's Options)
// and waits until every node sees every other's sessions. Everything is
// shut down at cleanup.
func startSessions(t testing.TB, n int, opts func(i int, o *Options), mutate ...func(i int, c *membership.Config)) *testCluster {
	t.Helper()
	tc := clustertest.Start(t, n, mutate...)
	tc.WaitMembers(n)
	c := &testCluster{t: t, tc: tc, opts: opts}
	for i := range n {
		c.startSessions(i)
	}
	c.waitPeers()
	return c
}

func (c *testCluster) options(i int) Options {
	o := Options{
		Logger:      clustertest.Logger(c.t, fmt.Sprintf("sess-%d", i)),
		LeaseTerm:   testLease,
		CallTimeout: 10 * time.Second,
	}
	if c.opts != nil {
		c.opts(i, &o)
	}
	return o
}

func (c *testCluster) startSessions(i int) {
	c.t.Helper()
	s, err := NewSessions(testCtx(c.t), c.tc.Nodes[i], c.options(i))
	require.NoError(c.t, err)
	c.t.Cleanup(s.Shutdown)
	for len(c.nodes) <= i {
		c.nodes = append(c.nodes, nil)
	}
	c.nodes[i] = &node{c: c.tc.Nodes[i], s: s}
}

// add starts one more member, joined through node 0, with sessions.
func (c *testCluster) add(mutate func(cfg *membership.Config)) *node {
	c.t.Helper()
	first := c.tc.Nodes[0].Addr()
	c.tc.Add(func(cfg *membership.Config) {
		cfg.WellKnown = []string{first}
		if mutate != nil {
			mutate(cfg)
		}
	})
	i := len(c.tc.Nodes) - 1
	c.startSessions(i)
	return c.nodes[i]
}

// live returns the nodes not crashed.
func (c *testCluster) live() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n != nil && !n.s.isClosed() {
			out = append(out, n)
		}
	}
	return out
}

// waitPeers waits until every live node sees every other live node's
// sessions.
func (c *testCluster) waitPeers() {
	c.t.Helper()
	live := c.live()
	require.Eventually(c.t, func() bool {
		for _, n := range live {
			if n.s.liveCount() != len(live) {
				return false
			}
		}
		return true
	}, clustertest.Timeout, 10*time.Millisecond, "session peers did not converge to %d", len(live))
}

// crash stops node i as a crash would: no Leave, no tag removal.
func (c *testCluster) crash(i int) {
	n := c.nodes[i]
	n.s.Shutdown()
	n.c.Shutdown()
}

// byID returns the node whose session node id is id.
func (c *testCluster) byID(id string) (int, *node) {
	for i, n := range c.nodes {
		if n != nil && n.s.selfID == id {
			return i, n
		}
	}
	c.t.Fatalf("no node has id %q", id)
	return -1, nil
}

// holders counts the live nodes that hold key as primary and as secondary.
func (c *testCluster) holders(key string) (primaries, secondaries int) {
	for _, n := range c.live() {
		if e := n.s.lookup(key); e != nil {
			switch e.state().role {
			case rolePrimary:
				primaries++
			case roleSecondary:
				secondaries++
			}
		}
	}
	return primaries, secondaries
}

// describe lists who holds key, for failure messages.
func (c *testCluster) describe(key string) string {
	out := ""
	for _, n := range c.live() {
		if e := n.s.lookup(key); e != nil {
			st := e.state()
			out += fmt.Sprintf("\n%s: role=%d epoch=%d members=%d version=%d primary=%s secondary=%s contested=%v", n.c.Name(), st.role, st.epoch, st.members, st.version, st.primary, st.secondary, st.contested)
		}
	}
	return out
}

// waitOneCopyEach waits until key has exactly one primary and one
// secondary copy.
func (c *testCluster) waitOneCopyEach(key string) {
	c.t.Helper()
	deadline := time.Now().Add(clustertest.Timeout)
	for {
		pr, sc := c.holders(key)
		if pr == 1 && sc == 1 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("want one primary and one secondary copy of %s:%s", key, c.describe(key))
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), clustertest.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// mustGet returns attribute key of the session id read on n.
func mustGet(t testing.TB, n *node, id, key string) (*Session, string) {
	t.Helper()
	h, err := n.s.Get(testCtx(t), id)
	require.NoError(t, err)
	v, _ := h.Get(key)
	return h, string(v)
}

// sessionOn creates a session on node i with attribute "v" set to value,
// saved.
func (c *testCluster) sessionOn(t testing.TB, i int, value string) (*node, *Session) {
	t.Helper()
	n := c.nodes[i]
	h, err := n.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, n, h, "v", value)
	return n, h
}

func set(t testing.TB, n *node, h *Session, key, value string) {
	t.Helper()
	require.NoError(t, h.Set(key, []byte(value)))
	require.NoError(t, n.s.Save(testCtx(t), h))
}

// val returns an attribute as a string, "" if unset.
func (a attrs) val(k string) string {
	v, _ := a.get(k)
	return string(v)
}
