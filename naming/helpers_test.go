package naming

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// Every test must leave no goroutine behind.
func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

// waitTimeout bounds every wait for convergence: gossip plus, at worst,
// one push/pull round (15 s in ProfileLocal), with room for the race
// detector on two cores.
const waitTimeout = 45 * time.Second

// tcluster is a test cluster with one tree per node.
type tcluster struct {
	*clustertest.Cluster
	t     *testing.T
	trees []*Tree
}

// noFaults takes a node off the fault network. Only partition tests need
// it, and a node on it can hang in Shutdown: membership's fault filter
// stops reading memberlist's packet channel before memberlist's UDP
// listener has stopped writing to it (reported; membership/transport.go).
func noFaults(_ int, c *membership.Config) { c.Faults = nil }

// startTrees starts n members (off the fault network) and a tree on each.
func startTrees(t *testing.T, n int, mutate ...func(i int, c *membership.Config)) *tcluster {
	t.Helper()
	return startTreesOn(t, n, append([]func(int, *membership.Config){noFaults}, mutate...)...)
}

// startTreesOn starts n members as clustertest configures them (on the
// fault network, for partitions) and a tree on each.
func startTreesOn(t *testing.T, n int, mutate ...func(i int, c *membership.Config)) *tcluster {
	t.Helper()
	tc := &tcluster{Cluster: clustertest.Start(t, n, mutate...), t: t}
	tc.WaitMembers(n)
	for _, node := range tc.Nodes {
		tc.trees = append(tc.trees, newTree(t, node, Options{}))
	}
	return tc
}

func newTree(t testing.TB, node *membership.Cluster, o Options) *Tree {
	t.Helper()
	o.Logger = clustertest.Logger(t, node.Name()+" naming")
	tr, err := New(node, o)
	require.NoError(t, err)
	t.Cleanup(func() { tr.Close() })
	return tr
}

// quiesce waits until no tree has gossiped for a while, so that no
// channel broadcast is in flight. membership.New lets memberlist deliver
// messages before it has set up its broadcast queue (a data race the race
// detector reports; reported to membership's owner), so tests start a
// node only while naming gossip is quiet.
func (tc *tcluster) quiesce() {
	const quiet = 1500 * time.Millisecond
	eventually(tc.t, tc.live(), "gossip quiet", func(tr *Tree) bool {
		return time.Since(time.Unix(0, tr.lastBroadcast.Load())) > quiet
	})
}

// addNode starts one more member (joined through node 0) with a tree.
func (tc *tcluster) addNode() *Tree {
	tc.quiesce()
	first := tc.Nodes[0].Addr()
	node := tc.Add(func(c *membership.Config) { c.WellKnown, c.Faults = []string{first}, nil })
	tr := newTree(tc.t, node, Options{})
	tc.trees = append(tc.trees, tr)
	return tr
}

// live returns the trees that are running.
func (tc *tcluster) live() []*Tree {
	var out []*Tree
	for _, tr := range tc.trees {
		if tr.State() == TreeRunning {
			out = append(out, tr)
		}
	}
	return out
}

// kill stops node i without telling anyone, as a crash would.
func (tc *tcluster) kill(i int) {
	tc.trees[i].cluster.Shutdown()
	tc.trees[i].Close()
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return c
}

// eventually waits for cond on every tree of trees, and on failure says
// which trees did not get there.
func eventually(t testing.TB, trees []*Tree, what string, cond func(*Tree) bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var bad []string
		for _, tr := range trees {
			if !cond(tr) {
				bad = append(bad, tr.self)
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, tr := range trees {
				t.Logf("%s %s (%d names):\n%s", tr.self, treeDigest(tr), tr.Len(), dump(tr))
			}
			t.Fatalf("%s: not reached within %s on %s", what, waitTimeout, strings.Join(bad, ","))
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for a condition
	}
}

// bound reports whether tr shows name bound to exactly these offers
// ("node=value" each, in node order).
func bound(tr *Tree, name string, offers ...string) bool {
	b, err := tr.Lookup(name)
	if err != nil {
		return len(offers) == 0
	}
	if len(b.Offers) != len(offers) {
		return false
	}
	for i, o := range b.Offers {
		if o.Node+"="+string(o.Value) != offers[i] {
			return false
		}
	}
	return true
}

// treeDigest hashes a tree's whole visible content.
func treeDigest(tr *Tree) string {
	h := sha256.New()
	it := tr.root.Load().Root().Iterator()
	for {
		k, e, ok := it.Next()
		if !ok {
			break
		}
		fmt.Fprintf(h, "%s|%d|%v", k, e.b.Scope, e.b.Clusterable)
		for _, o := range e.b.Offers {
			fmt.Fprintf(h, "|%s=%x", o.Node, o.Value)
		}
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// dump renders a tree for failure messages.
func dump(tr *Tree) string {
	var sb strings.Builder
	it := tr.root.Load().Root().Iterator()
	for {
		k, e, ok := it.Next()
		if !ok {
			break
		}
		fmt.Fprintf(&sb, "  %s:", k)
		for _, o := range e.b.Offers {
			fmt.Fprintf(&sb, " %s=%q", o.Node, o.Value)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// converged waits until every tree has the same digest (and, if want is
// not nil, equals want's content).
func converged(t testing.TB, trees []*Tree) string {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		d0 := treeDigest(trees[0])
		same := true
		for _, tr := range trees[1:] {
			if treeDigest(tr) != d0 {
				same = false
			}
		}
		if same {
			return d0
		}
		if time.Now().After(deadline) {
			var sb strings.Builder
			for _, tr := range trees {
				fmt.Fprintf(&sb, "%s %s (%d names)\n%s", tr.self, treeDigest(tr), tr.Len(), dump(tr))
			}
			t.Fatalf("trees did not converge within %s:\n%s", waitTimeout, sb.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}
