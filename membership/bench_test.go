package membership_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// These benchmarks compare Troupe's membership with raw memberlist under
// the same timing (memberlist's Local profile) in the same run. Each
// iteration starts a fresh cluster, so run them with a fixed count:
//
//	go test -run '^$' -bench 'JoinConvergence|CrashDetection' -benchtime 5x -timeout 2h ./membership/
//
// Each reports both implementations' median time and their ratio.

// node is what the benchmarks need of either implementation.
type benchNode interface {
	members() int
	addr() string
	join(addr string) error
	shutdown()
}

type rawNode struct{ ml *memberlist.Memberlist }

func (n rawNode) members() int { return n.ml.NumMembers() }
func (n rawNode) addr() string { return n.ml.LocalNode().Address() }
func (n rawNode) join(addr string) error {
	_, err := n.ml.Join([]string{addr})
	return err
}
func (n rawNode) shutdown() { _ = n.ml.Shutdown() }

type troupeNode struct{ c *membership.Cluster }

func (n troupeNode) members() int { return n.c.NumMembers() }
func (n troupeNode) addr() string { return n.c.Addr() }
func (n troupeNode) join(addr string) error {
	_, err := n.c.Join(context.Background(), addr)
	return err
}
func (n troupeNode) shutdown() { n.c.Shutdown() }

func startBenchNode(b *testing.B, impl string, cluster string, i int) benchNode {
	switch impl {
	case "memberlist":
		cfg := memberlist.DefaultLocalConfig()
		cfg.Name = fmt.Sprintf("node-%d", i)
		cfg.Label = cluster
		cfg.BindAddr = clustertest.Host(i)
		cfg.BindPort = 0
		cfg.AdvertisePort = 0
		cfg.DeadNodeReclaimTime = time.Nanosecond
		cfg.Logger = log.New(io.Discard, "", 0)
		ml, err := memberlist.Create(cfg)
		if err != nil {
			b.Fatal(err)
		}
		return rawNode{ml}
	default:
		cfg := clustertest.Config(b, cluster, i, nil)
		c, err := membership.New(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		return troupeNode{c}
	}
}

// startCluster starts n nodes that each join node 0 as soon as they
// exist, and returns them with the time until every node saw all n.
func startCluster(b *testing.B, impl string, n int) ([]benchNode, time.Duration) {
	cluster := fmt.Sprintf("bench-%s-%d-%d", impl, n, time.Now().UnixNano())
	start := time.Now()
	nodes := []benchNode{startBenchNode(b, impl, cluster, 0)}
	for i := 1; i < n; i++ {
		node := startBenchNode(b, impl, cluster, i)
		nodes = append(nodes, node)
		// memberlist refuses more than 128 concurrent push/pulls; retry.
		for err := node.join(nodes[0].addr()); err != nil; err = node.join(nodes[0].addr()) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAll(b, nodes, n)
	return nodes, time.Since(start)
}

func waitAll(b *testing.B, nodes []benchNode, want int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		done := true
		for _, n := range nodes {
			if n.members() != want {
				done = false
				break
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("no convergence to %d", want)
		}
		time.Sleep(5 * time.Millisecond) // polling resolution of the measurement
	}
}

func stopAll(nodes []benchNode) {
	for _, n := range nodes {
		n.shutdown()
	}
}

// paired runs measure both implementations in every iteration, in
// alternating order, so that load from elsewhere on a shared machine hits
// both alike; it reports the median of each and their ratio. Medians,
// because about one run in four waits for memberlist's next push/pull
// (seconds) in either implementation.
func paired(b *testing.B, measure func(impl string) time.Duration) {
	impls := []string{"memberlist", "troupe"}
	got := map[string][]time.Duration{}
	for i := range b.N {
		for j := range impls {
			impl := impls[(i+j)%2]
			got[impl] = append(got[impl], measure(impl))
		}
	}
	raw, ours := median(got["memberlist"]), median(got["troupe"])
	b.ReportMetric(raw.Seconds(), "memberlist-s")
	b.ReportMetric(ours.Seconds(), "troupe-s")
	b.ReportMetric(ours.Seconds()/raw.Seconds(), "ratio")
	b.Logf("memberlist %v, troupe %v", got["memberlist"], got["troupe"])
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func BenchmarkJoinConvergence(b *testing.B) {
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			paired(b, func(impl string) time.Duration {
				nodes, d := startCluster(b, impl, n)
				stopAll(nodes)
				return d
			})
		})
	}
}

func BenchmarkCrashDetection(b *testing.B) {
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			paired(b, func(impl string) time.Duration {
				nodes, _ := startCluster(b, impl, n)
				start := time.Now()
				nodes[n-1].shutdown()
				waitAll(b, nodes[:n-1], n-1)
				d := time.Since(start)
				stopAll(nodes[:n-1])
				return d
			})
		})
	}
}
