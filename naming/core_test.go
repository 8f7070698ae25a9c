package naming

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/membership"
)

// simNet is a deterministic in-memory network of cores: messages are
// delivered when the test says so, and links can be cut.
type simNet struct {
	t     *testing.T
	now   time.Time
	cores map[string]*core
	stats map[string]*counters
	queue []packet
	cut   map[[2]string]bool
}

type packet struct {
	from, to string
	raw      []byte
	state    bool
}

func newNet(t *testing.T, names ...string) *simNet {
	n := &simNet{t: t, now: time.Unix(1_800_000_000, 0), cores: map[string]*core{}, stats: map[string]*counters{}, cut: map[[2]string]bool{}}
	for _, name := range names {
		n.start(name)
	}
	for _, a := range names {
		for _, b := range names {
			n.cores[a].memberEvent(membership.Event{Type: membership.EventJoin, Member: membership.Member{Name: b}})
		}
	}
	return n
}

func (n *simNet) clock() time.Time { return n.now }

func (n *simNet) start(name string) *core {
	opts, err := Options{Logger: slog.New(slog.DiscardHandler)}.withDefaults()
	require.NoError(n.t, err)
	st := &counters{}
	c := newCore(name, uint64(n.now.UnixNano())+uint64(len(n.cores)), opts, n.clock, st, 1100)
	n.cores[name], n.stats[name] = c, st
	return c
}

// collect moves every core's outgoing messages into the queue.
func (n *simNet) collect() {
	names := n.names()
	for _, name := range names {
		c := n.cores[name]
		c.flush()
		for _, m := range c.out {
			var raws [][]byte
			switch {
			case m.raw != nil:
				raws = [][]byte{m.raw}
			case m.owner != nil:
				raws = chunkOwner(m.owner)
			case m.clust != nil:
				raws = chunkClust(m.clust)
			}
			targets := []string{m.to}
			if m.to == "" {
				targets = slices.DeleteFunc(slices.Clone(names), func(x string) bool { return x == name })
			}
			for _, to := range targets {
				for _, raw := range raws {
					n.queue = append(n.queue, packet{from: name, to: to, raw: raw})
				}
			}
		}
		c.out = nil
	}
}

func (n *simNet) names() []string {
	var out []string
	for k := range n.cores {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// run delivers messages until none are left.
func (n *simNet) run() {
	for range 1000 {
		n.collect()
		if len(n.queue) == 0 {
			return
		}
		q := n.queue
		n.queue = nil
		for _, p := range q {
			n.deliver(p)
		}
	}
	n.t.Fatal("messages kept flowing")
}

func (n *simNet) deliver(p packet) {
	c := n.cores[p.to]
	if c == nil || n.cut[[2]string{p.from, p.to}] {
		return
	}
	typ, v, err := decodeMsg(p.raw, c.opts.MaxValueSize)
	require.NoError(n.t, err)
	if p.state {
		c.mergeDigest(p.from, v.(*digestMsg))
		return
	}
	c.handle(p.from, typ, v)
}

// pushPull exchanges digests between a and b, as memberlist does.
func (n *simNet) pushPull(a, b string) {
	for _, x := range [][2]string{{a, b}, {b, a}} {
		raw, err := encodeMsg(msgDigest, n.cores[x[0]].digest())
		require.NoError(n.t, err)
		n.queue = append(n.queue, packet{from: x[0], to: x[1], raw: raw, state: true})
	}
	n.run()
}

func (n *simNet) advance(d time.Duration) {
	n.now = n.now.Add(d)
	for _, name := range n.names() {
		n.cores[name].tick()
	}
}

func (n *simNet) lookup(node, name string) string {
	c := n.cores[node]
	c.flush()
	e, ok := c.root.Get([]byte(name))
	if !ok {
		return ""
	}
	s := ""
	for _, o := range e.b.Offers {
		s += o.Node + "=" + string(o.Value) + " "
	}
	return s[:len(s)-1]
}

func (n *simNet) bind(node string, kind opKind, name, value string, opts ...BindOption) error {
	bo, err := bindOpts(opts)
	require.NoError(n.t, err)
	var v []byte
	if value != "" {
		v = []byte(value)
	}
	return n.cores[node].local(kind, name, v, bo)
}

func coreDigest(c *core) string {
	c.flush()
	s := ""
	it := c.root.Root().Iterator()
	for {
		k, e, ok := it.Next()
		if !ok {
			return s
		}
		s += string(k) + ":"
		for _, o := range e.b.Offers {
			s += o.Node + "=" + string(o.Value) + ","
		}
		s += "\n"
	}
}

func TestCoreClusterScopedLastWriterWinsAcrossPartition(t *testing.T) {
	n := newNet(t, "a", "b")
	require.NoError(t, n.bind("a", opBind, "x", "first", WithScope(ClusterScope)))
	n.run()
	require.Equal(t, "a=first", n.lookup("b", "x"))
	n.cut[[2]string{"a", "b"}], n.cut[[2]string{"b", "a"}] = true, true
	require.NoError(t, n.bind("b", opUnbind, "x", ""))
	n.advance(time.Millisecond)
	require.NoError(t, n.bind("a", opRebind, "x", "second", WithScope(ClusterScope)))
	n.run()
	clear(n.cut)
	n.pushPull("a", "b")
	assert.Equal(t, "a=second", n.lookup("b", "x"))
	assert.Equal(t, "a=second", n.lookup("a", "x"))
}

var _ = fmt.Sprint

// lossy delivers the queue in random order, dropping and duplicating
// some packets, until it is empty.
func (n *simNet) lossy(rng *rand.Rand, drop float64) {
	for range 1000 {
		n.collect()
		if len(n.queue) == 0 {
			return
		}
		q := n.queue
		n.queue = nil
		rng.Shuffle(len(q), func(i, j int) { q[i], q[j] = q[j], q[i] })
		for _, p := range q {
			if rng.Float64() < drop {
				continue
			}
			n.deliver(p)
			if rng.Float64() < drop {
				n.deliver(p)
			}
		}
	}
	n.t.Fatal("messages kept flowing")
}

func (n *simNet) kill(name string) {
	delete(n.cores, name)
	for _, c := range n.cores {
		c.memberEvent(membership.Event{Type: membership.EventFail, Member: membership.Member{Name: name}})
	}
}

func (n *simNet) join(name string) {
	c := n.start(name)
	for _, other := range n.names() {
		c.memberEvent(membership.Event{Type: membership.EventJoin, Member: membership.Member{Name: other}})
		if other != name {
			n.cores[other].memberEvent(membership.Event{Type: membership.EventJoin, Member: membership.Member{Name: name}})
		}
	}
}

// The core against the same model as TestRandomizedOperationsConverge,
// with message loss, duplication and reordering, crashes and restarts
// under the same name, then anti-entropy only.
func TestCoreRandomizedLossyConverges(t *testing.T) {
	for seed := range uint64(200) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { coreRandomized(t, seed) })
	}
}

func coreRandomized(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	n := newNet(t, "a", "b", "c", "d")
	m := &model{own: map[string]map[string]string{}, shared: map[string]map[string]string{}, cluster: map[string][2]string{}}
	for step := range 150 {
		names := n.names()
		node := names[rng.IntN(len(names))]
		val := fmt.Sprintf("v%d", step)
		n.advance(time.Duration(rng.IntN(300)) * time.Millisecond)
		switch r := rng.IntN(100); {
		case r < 45:
			name := fmt.Sprintf("own/%s/k%d", node, rng.IntN(6))
			if m.own[node] == nil {
				m.own[node] = map[string]string{}
			}
			if _, has := m.own[node][name]; has && rng.IntN(2) == 0 {
				require.NoError(t, n.bind(node, opUnbind, name, ""))
				delete(m.own[node], name)
			} else {
				require.NoError(t, n.bind(node, opRebind, name, val))
				m.own[node][name] = val
			}
		case r < 65:
			name := fmt.Sprintf("shared/s%d", rng.IntN(3))
			if m.shared[name] == nil {
				m.shared[name] = map[string]string{}
			}
			if _, has := m.shared[name][node]; has && rng.IntN(3) == 0 {
				require.NoError(t, n.bind(node, opUnbind, name, ""))
				delete(m.shared[name], node)
			} else {
				require.NoError(t, n.bind(node, opRebind, name, val, Clusterable()))
				m.shared[name][node] = val
			}
		case r < 85:
			name := fmt.Sprintf("cluster/c%d", rng.IntN(4))
			n.advance(2 * time.Millisecond)
			if _, has := m.cluster[name]; has && rng.IntN(3) == 0 {
				// Make sure the node has the latest write first.
				for _, o := range names {
					n.pushPull(node, o)
				}
				require.NoError(t, n.bind(node, opUnbind, name, ""), "step %d", step)
				delete(m.cluster, name)
			} else {
				require.NoError(t, n.bind(node, opRebind, name, val, WithScope(ClusterScope)))
				m.cluster[name] = [2]string{node, val}
			}
		case r < 92:
			if len(names) <= 2 {
				continue
			}
			// Spread the node's cluster writes before it dies.
			for _, o := range names {
				n.pushPull(node, o)
			}
			n.kill(node)
			delete(m.own, node)
			for _, offers := range m.shared {
				delete(offers, node)
			}
		default:
			// A new node, or a dead one restarted under its name.
			cands := []string{"e", "f", "a", "b", "c", "d"}
			for _, x := range cands {
				if n.cores[x] == nil {
					n.advance(time.Millisecond)
					n.join(x)
					break
				}
			}
		}
		n.lossy(rng, 0.3)
	}
	// Anti-entropy only: a few rounds of push/pull and ticks.
	want := m.digest()
	for round := range 10 {
		names := n.names()
		for _, a := range names {
			n.pushPull(a, names[rng.IntN(len(names))])
		}
		n.advance(3 * time.Second)
		n.run()
		ok := true
		for _, name := range names {
			if modelDigestOf(n.cores[name]) != want {
				ok = false
			}
		}
		if ok {
			return
		}
		if round == 9 {
			for _, name := range names {
				t.Logf("%s:\n%s", name, coreDigest(n.cores[name]))
			}
			t.Fatalf("seed %d: cores did not converge to the model", seed)
		}
	}
}

// modelDigestOf hashes a core's view the way model.digest does.
func modelDigestOf(c *core) string {
	c.flush()
	h := sha256.New()
	it := c.root.Root().Iterator()
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
