package naming

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// model is the tree the randomized test expects.
type model struct {
	own     map[string]map[string]string // node -> name -> value (node scope)
	shared  map[string]map[string]string // name -> node -> value (clusterable)
	cluster map[string][2]string         // name -> (writer, value)
}

func (m *model) digest() string {
	type offer struct{ node, value string }
	type row struct {
		scope       Scope
		clusterable bool
		offers      []offer
	}
	rows := map[string]row{}
	for node, names := range m.own {
		for n, v := range names {
			rows[n] = row{offers: []offer{{node, v}}}
		}
	}
	for n, offers := range m.shared {
		if len(offers) == 0 {
			continue
		}
		r := row{clusterable: true}
		for node, v := range offers {
			r.offers = append(r.offers, offer{node, v})
		}
		slices.SortFunc(r.offers, func(a, b offer) int { return cmpString(a.node, b.node) })
		rows[n] = r
	}
	for n, wv := range m.cluster {
		rows[n] = row{scope: ClusterScope, offers: []offer{{wv[0], wv[1]}}}
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.New()
	for _, n := range names {
		r := rows[n]
		fmt.Fprintf(h, "%s|%d|%v", n, r.scope, r.clusterable)
		for _, o := range r.offers {
			fmt.Fprintf(h, "|%s=%x", o.node, []byte(o.value))
		}
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Random binds, rebinds, unbinds, cluster-scoped writes, crashes and late
// joiners on several nodes; afterwards every live node's tree equals the
// model. TROUPE_SEED replays a run.
func TestRandomizedOperationsConverge(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TROUPE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		seed = v
	}
	t.Logf("TROUPE_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))

	tc := startTrees(t, 4)
	m := &model{own: map[string]map[string]string{}, shared: map[string]map[string]string{}, cluster: map[string][2]string{}}
	c := ctx(t)
	pickLive := func() *Tree {
		live := tc.live()
		return live[rng.IntN(len(live))]
	}
	kills, adds := 0, 0
	for step := range 200 {
		tr := pickLive()
		node := tr.self
		val := fmt.Sprintf("v%d", step)
		switch r := rng.IntN(100); {
		case r < 50: // node scope, the node's own names
			name := fmt.Sprintf("own/%s/k%d", node, rng.IntN(8))
			if m.own[node] == nil {
				m.own[node] = map[string]string{}
			}
			_, has := m.own[node][name]
			switch {
			case !has:
				require.NoError(t, tr.Bind(c, name, []byte(val)), "step %d", step)
				m.own[node][name] = val
			case rng.IntN(2) == 0:
				require.NoError(t, tr.Rebind(c, name, []byte(val)), "step %d", step)
				m.own[node][name] = val
			default:
				require.NoError(t, tr.Unbind(c, name), "step %d", step)
				delete(m.own[node], name)
			}
		case r < 70: // clusterable offers
			name := fmt.Sprintf("shared/s%d", rng.IntN(3))
			if m.shared[name] == nil {
				m.shared[name] = map[string]string{}
			}
			if _, has := m.shared[name][node]; has && rng.IntN(3) == 0 {
				require.NoError(t, tr.Unbind(c, name), "step %d", step)
				delete(m.shared[name], node)
			} else {
				require.NoError(t, tr.Rebind(c, name, []byte(val), Clusterable()), "step %d", step)
				m.shared[name][node] = val
			}
		case r < 90: // cluster scope, last writer wins
			name := fmt.Sprintf("cluster/c%d", rng.IntN(4))
			// Writes from different nodes in one millisecond are ordered
			// by logical counters, not real time: space them.
			time.Sleep(2 * time.Millisecond)
			if _, has := m.cluster[name]; has && rng.IntN(3) == 0 {
				// The writer must see the binding to remove it.
				eventually(t, []*Tree{tr}, "see "+name, func(tr *Tree) bool {
					b, err := tr.Lookup(name)
					return err == nil && b.Offers[0].Node == m.cluster[name][0] && string(b.Offers[0].Value) == m.cluster[name][1]
				})
				require.NoError(t, tr.Unbind(c, name), "step %d", step)
				delete(m.cluster, name)
			} else {
				require.NoError(t, tr.Rebind(c, name, []byte(val), WithScope(ClusterScope)), "step %d", step)
				m.cluster[name] = [2]string{node, val}
			}
		case r < 95: // a crash
			if len(tc.live()) <= 3 || kills >= 2 || node == "node-0" {
				continue
			}
			kills++
			// A cluster-scoped write survives its writer only once it has
			// left the writer: wait until every node has this node's.
			eventually(t, tc.live(), "writes of "+node+" spread", func(x *Tree) bool {
				for name, wv := range m.cluster {
					if wv[0] == node && !bound(x, name, node+"="+wv[1]) {
						return false
					}
				}
				return true
			})
			t.Logf("step %d: kill %s", step, node)
			tc.kill(slices.Index(tc.trees, tr))
			delete(m.own, node)
			for _, offers := range m.shared {
				delete(offers, node)
			}
		default: // a late joiner
			if adds >= 2 {
				continue
			}
			adds++
			late := tc.addNode()
			t.Logf("step %d: add %s", step, late.self)
		}
	}
	want := m.digest()
	live := tc.live()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok := true
		for _, tr := range live {
			if treeDigest(tr) != want {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for _, tr := range live {
				t.Logf("%s %s:\n%s", tr.self, treeDigest(tr), dump(tr))
			}
			t.Fatalf("trees did not reach the model %s (seed %d)", want, seed)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}
