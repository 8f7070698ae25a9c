package troupetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/replication"
)

// DefaultTimeout bounds every wait of a Cluster (starting a node, Leave,
// WaitMembers) unless WithTimeout says otherwise. It is generous because
// tests often run with the race detector on a busy machine; a wait that
// succeeds returns as soon as it can.
const DefaultTimeout = time.Minute

// pollInterval is how often WaitMembers looks again.
const pollInterval = 20 * time.Millisecond

// An Option adjusts the Cluster that Start builds.
type Option interface {
	apply(*Cluster)
}

type optionFunc func(*Cluster)

func (f optionFunc) apply(c *Cluster) { f(c) }

// WithConfig lets f change the configuration of node i before it starts,
// for the nodes Start starts and for those Add starts later. f sees the
// defaults (see Start) and may change anything: a role, tags, sessions or
// naming options, another Logger, even Membership.Faults (nil takes the
// node off the cluster's Network). Several WithConfig run in order.
func WithConfig(f func(i int, c *troupe.Config)) Option {
	return optionFunc(func(c *Cluster) { c.configs = append(c.configs, f) })
}

// WithTimeout sets how long the Cluster's waits may take before they fail
// the test. Default (and for d <= 0) DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(c *Cluster) {
		if d > 0 {
			c.timeout = d
		}
	})
}

// Cluster is a set of troupe.Nodes running in the test's process, on
// loopback, sharing one Network. Start makes one. Its methods that wait
// or start nodes fail the test with t.Fatal, so call them from the test's
// goroutine; the others (Node, Nodes, Host, Kill and the faults) may be
// called from any goroutine.
type Cluster struct {
	t       testing.TB
	name    string
	key     []byte
	net     *Network
	timeout time.Duration
	configs []func(i int, c *troupe.Config)

	mu struct {
		sync.Mutex
		nodes []*troupe.Node
	}
}

// Start starts n nodes in the test's process and waits until each of them
// sees all n as members; it fails the test if a node does not start or
// the cluster does not form within the timeout. Node i:
//
//   - listens on Host(i) (127.0.0.2 for node 0, then 127.0.0.3, …) with
//     free ports, and is named "node-i";
//   - uses membership.ProfileLocal timings and a 200 ms session lease
//     (replication.Options.LeaseTerm), so that failures are seen and
//     taken over within seconds;
//   - shares with the others a cluster name and a random 32-byte cluster
//     key (Membership.SecretKeys) made for this Cluster alone, so that
//     parallel tests never mix;
//   - finds the others through node 0 as its well-known member;
//   - logs to t.Log, each line prefixed with its name, at Warn and above
//     (the environment variable TROUPE_TEST_LOG=debug|info|warn|error
//     sets the level), and stops logging when the test ends;
//   - has the Cluster's Network as Membership.Faults.
//
// WithConfig options change any of this. Every node is shut down when the
// test ends (t.Cleanup), and its goroutines have ended by then.
func Start(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	c := &Cluster{
		t:       t,
		name:    "troupetest-" + hex.EncodeToString(key[:4]),
		key:     key,
		net:     NewNetwork(),
		timeout: DefaultTimeout,
	}
	for _, o := range opts {
		o.apply(c)
	}
	for range n {
		c.Add()
	}
	c.WaitMembers(n)
	return c
}

// Host returns the IP address of node i: 127.0.0.(i+2). Node 0 is not on
// 127.0.0.1, where other local services live. Linux routes all of
// 127.0.0.0/8 to loopback; other systems may need the addresses added as
// aliases (macOS: sudo ifconfig lo0 alias 127.0.0.3 up).
func (c *Cluster) Host(i int) string {
	return fmt.Sprintf("127.0.0.%d", i+2)
}

// Node returns node i, in the order Start and Add started them, whether
// it is still running or not.
func (c *Cluster) Node(i int) *troupe.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.nodes[i]
}

// Nodes returns every node started so far, in order, stopped ones
// included.
func (c *Cluster) Nodes() []*troupe.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*troupe.Node(nil), c.mu.nodes...)
}

// Network returns the Network all the nodes share, to break it by IP
// address (the methods of Cluster do it by node index).
func (c *Cluster) Network() *Network { return c.net }

// config returns node i's configuration: the defaults, then WithConfig.
func (c *Cluster) config(i int, wellKnown []string) troupe.Config {
	name := fmt.Sprintf("node-%d", i)
	cfg := troupe.Config{
		Membership: membership.Config{
			ClusterName: c.name,
			NodeName:    name,
			BindAddr:    c.Host(i) + ":0",
			WellKnown:   wellKnown,
			Profile:     membership.ProfileLocal,
			SecretKeys:  [][]byte{c.key},
			Faults:      c.net,
		},
		Sessions: replication.Options{LeaseTerm: 200 * time.Millisecond},
		Logger:   clustertest.Logger(c.t, name),
	}
	for _, f := range c.configs {
		f(i, &cfg)
	}
	return cfg
}

// Add starts one more node, with the next index, and returns it once it
// has joined the cluster through the first running node. It does not
// wait until every node knows it: WaitMembers does. It fails the test if
// the node does not start within the timeout.
func (c *Cluster) Add() *troupe.Node {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.mu.nodes)
	var wellKnown []string
	for _, n := range c.mu.nodes {
		if running(n) {
			wellKnown = []string{n.Cluster().Addr()}
			break
		}
	}
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	node, err := troupe.Start(ctx, c.config(i, wellKnown))
	if err != nil {
		c.t.Fatalf("troupetest: start node %d: %v", i, err)
	}
	c.t.Cleanup(node.Shutdown)
	c.mu.Lock()
	c.mu.nodes = append(c.mu.nodes, node)
	c.mu.Unlock()
	return node
}

// Kill stops node i at once, without leaving, as a crash would: its peers
// detect a failure within the failure detector's timing and take over its
// sessions, pins and singletons. It waits for the node's goroutines.
func (c *Cluster) Kill(i int) { c.Node(i).Shutdown() }

// Leave makes node i leave gracefully (troupe.Node.Leave): it hands its
// sessions, pins and singletons over, and its peers see a leave, not a
// failure. It returns Leave's error; the timeout bounds it.
func (c *Cluster) Leave(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.Node(i).Leave(ctx)
}

// WaitMembers waits until every running node sees exactly want live
// members, or, with nodes given, until each of those does (they must be
// running). It polls, and fails the test with what each node saw if the
// timeout passes first.
//
// After a partition, wait for each side on its own:
//
//	tc.Partition([]int{0, 1}, []int{2})
//	tc.WaitMembers(2, 0, 1)
//	tc.WaitMembers(1, 2)
func (c *Cluster) WaitMembers(want int, nodes ...int) {
	c.t.Helper()
	var watch []*troupe.Node
	if len(nodes) == 0 {
		for _, n := range c.Nodes() {
			if running(n) {
				watch = append(watch, n)
			}
		}
	} else {
		for _, i := range nodes {
			n := c.Node(i)
			if !running(n) {
				c.t.Fatalf("troupetest: WaitMembers: node %d is %s", i, n.Cluster().State())
			}
			watch = append(watch, n)
		}
	}
	deadline := time.Now().Add(c.timeout)
	for {
		var bad []string
		for _, n := range watch {
			if got := n.Cluster().NumMembers(); got != want {
				bad = append(bad, fmt.Sprintf("%s sees %d: %s", n.Name(), got, names(n.Cluster().Members())))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("troupetest: members did not converge to %d within %s:\n%s", want, c.timeout, strings.Join(bad, "\n"))
		}
		time.Sleep(pollInterval) // the interval between two looks, not a wait for the condition
	}
}

// Cut cuts nodes i and j apart (see Network.Cut).
func (c *Cluster) Cut(i, j int) { c.net.Cut(c.Host(i), c.Host(j)) }

// Isolate cuts node i off from every other node (see Network.Isolate).
func (c *Cluster) Isolate(i int) { c.net.Isolate(c.Host(i)) }

// Partition splits the listed nodes into sides that cannot reach each
// other; nodes listed on no side reach everyone (see Network.Partition).
func (c *Cluster) Partition(sides ...[]int) {
	hosts := make([][]string, len(sides))
	for s, side := range sides {
		for _, i := range side {
			hosts[s] = append(hosts[s], c.Host(i))
		}
	}
	c.net.Partition(hosts...)
}

// Delay holds back traffic between nodes i and j by d in each direction
// (see Network.Delay); d <= 0 removes the delay.
func (c *Cluster) Delay(i, j int, d time.Duration) { c.net.Delay(c.Host(i), c.Host(j), d) }

// Heal removes every cut and every delay. The cluster re-merges by
// itself; WaitMembers waits for it.
func (c *Cluster) Heal() { c.net.Heal() }

func running(n *troupe.Node) bool {
	return n.Cluster().State() == membership.ClusterRunning
}

func names(ms []membership.Member) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return strings.Join(out, ",")
}
