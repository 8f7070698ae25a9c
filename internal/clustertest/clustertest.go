// Package clustertest starts in-process membership clusters for Troupe's
// own tests: N members on loopback, each on its own 127.0.0.x address and
// a free port, with short timings, logs routed to the test, a shared fault
// network for partitions, and Shutdown registered with t.Cleanup.
//
//	tc := clustertest.Start(t, 5)           // 5 nodes joined through node 0
//	tc.WaitMembers(5)                       // every node sees 5 alive
//	tc.Net.Partition(tc.Hosts(0, 1, 2), tc.Hosts(3, 4))
//
// It starts bare membership.Clusters, for the layers that are built on
// them (naming, replication) and whose in-package tests cannot import the
// root package. Clusters of full troupe.Nodes, and the public side of the
// same fault network, are package troupetest, which uses Logger and
// VerifyTestMain from here.
package clustertest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/faultnet"
	"github.com/troupe-go/troupe/membership"
)

// Timeout bounds every wait in this package; generous because CI runs the
// race detector on two cores.
const Timeout = 60 * time.Second

// Cluster is a set of in-process members sharing one fault network.
type Cluster struct {
	T     testing.TB
	Net   *faultnet.Network
	Nodes []*membership.Cluster
	// Name is the cluster name, unique per test so parallel tests never mix.
	Name string
}

// Host returns the loopback IP of node i: 127.0.0.(i+2), so node 0 is
// never on 127.0.0.1 where stray local services live.
func Host(i int) string { return fmt.Sprintf("127.0.0.%d", i+2) }

// Hosts returns the hosts of the given node indexes, for Net.Partition.
func (tc *Cluster) Hosts(idx ...int) []string {
	out := make([]string, len(idx))
	for i, n := range idx {
		out[i] = Host(n)
	}
	return out
}

// Key returns the cluster key of the test cluster clusterName: every node
// of one test cluster shares it, and clusters of different names differ.
func Key(clusterName string) []byte {
	k := sha256.Sum256([]byte("troupe test cluster key " + clusterName))
	return k[:]
}

// Config returns the configuration of node i of a test cluster: ProfileLocal
// timings, its own 127.0.0.x host and a free port, logs to t, and net as
// its fault network unless net is nil.
func Config(t testing.TB, clusterName string, i int, net *faultnet.Network) membership.Config {
	cfg := membership.Config{
		ClusterName: clusterName,
		NodeName:    fmt.Sprintf("node-%d", i),
		BindAddr:    Host(i) + ":0",
		Profile:     membership.ProfileLocal,
		Logger:      Logger(t, fmt.Sprintf("node-%d", i)),
		SecretKeys:  [][]byte{Key(clusterName)},
	}
	if net != nil {
		cfg.Faults = net // not a nil *Network in a non-nil interface
	}
	return cfg
}

// New prepares a cluster without starting nodes; use Add to start them.
func New(t testing.TB) *Cluster {
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	return &Cluster{T: t, Net: faultnet.New(), Name: fmt.Sprintf("test-%08x", h.Sum32())}
}

// Start starts n nodes; nodes 1..n-1 name node 0 as their well-known
// member. mutate, if given, adjusts each node's config before it starts.
func Start(t testing.TB, n int, mutate ...func(i int, c *membership.Config)) *Cluster {
	tc := New(t)
	var first string
	for i := range n {
		node := tc.Add(func(c *membership.Config) {
			if i > 0 {
				c.WellKnown = []string{first}
			}
			for _, m := range mutate {
				m(i, c)
			}
		})
		if i == 0 {
			first = node.Addr()
		}
	}
	return tc
}

// Add starts one more node (index len(tc.Nodes)) and registers its
// Shutdown with t.Cleanup.
func (tc *Cluster) Add(mutate func(c *membership.Config)) *membership.Cluster {
	t := tc.T
	t.Helper()
	cfg := Config(t, tc.Name, len(tc.Nodes), tc.Net)
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	node, err := membership.New(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(node.Shutdown)
	tc.Nodes = append(tc.Nodes, node)
	return node
}

// Live returns the nodes whose State is running.
func (tc *Cluster) Live() []*membership.Cluster {
	var out []*membership.Cluster
	for _, n := range tc.Nodes {
		if n.State() == membership.ClusterRunning {
			out = append(out, n)
		}
	}
	return out
}

// WaitMembers waits until every running node sees exactly want alive
// members.
func (tc *Cluster) WaitMembers(want int) {
	tc.T.Helper()
	WaitMembers(tc.T, tc.Live(), want)
}

// WaitMembers waits until each of nodes sees exactly want alive members,
// and reports what each saw if the deadline passes.
func WaitMembers(t testing.TB, nodes []*membership.Cluster, want int) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		var bad []string
		for _, n := range nodes {
			if got := n.NumMembers(); got != want {
				bad = append(bad, fmt.Sprintf("%s sees %d: %s", n.Name(), got, names(n.Members())))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members did not converge to %d within %s:\n%s", want, Timeout, strings.Join(bad, "\n"))
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for a condition
	}
}

func names(ms []membership.Member) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return strings.Join(out, ",")
}

// Logger returns a logger that writes to t.Log with a prefix, and stops
// writing once the test is over (memberlist may log from goroutines that
// end just after Shutdown). TROUPE_TEST_LOG=debug|info|warn sets the
// level; default warn.
func Logger(t testing.TB, prefix string) *slog.Logger {
	level := slog.LevelWarn
	switch os.Getenv("TROUPE_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "error":
		level = slog.LevelError
	}
	w := &testWriter{t: t, prefix: prefix}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	done   bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(w.prefix + " " + strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// FreePort returns a port that is free for both TCP and UDP on every given
// host at the time of the call, for tests that must know a node's address
// before it starts (a well-known member that starts last).
func FreePort(t testing.TB, hosts ...string) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", hosts[0]+":0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if portFree(hosts, port) {
			return port
		}
	}
	t.Fatal("no free port found")
	return 0
}

func portFree(hosts []string, port int) bool {
	for _, h := range hosts {
		addr := net.JoinHostPort(h, strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}
