// Command benchsave measures, in one run on loopback: the round-trip
// floor (a ping-pong on one persistent TCP connection, see
// internal/benchnet) taking turns with sync-replicated Saves between two
// nodes from one client — p50 and p99 of each — then the throughput of
// many concurrent clients each saving its own session.
//
//	go run ./replication/internal/benchsave -duration 10s
//
// Both nodes run in this process and share its CPUs with the clients.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/internal/benchnet"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/replication"
)

// turn is how long the floor and the one-client Saves each run before
// the other takes over, so that both see the same load on a shared
// machine.
const turn = 50 * time.Millisecond

func main() {
	duration := flag.Duration("duration", 5*time.Second, "how long each measurement runs")
	clients := flag.Int("clients", 64, "concurrent clients for the throughput run, one session each")
	size := flag.Int("size", 1024, "session size in bytes (attribute names included)")
	attrs := flag.Int("attrs", 8, "attributes in the session; each Save changes one of them")
	key := flag.Bool("key", true, "encrypt and authenticate with a cluster key")
	async := flag.Bool("async", false, "ModeAsync instead of ModeSync")
	quiet := flag.Bool("quiet", false, "measure only the throughput, and print only its number")
	flag.Parse()
	if *attrs < 1 || *size/(*attrs) < 16 {
		log.Fatal("need at least 1 attribute and 16 bytes per attribute")
	}

	ctx := context.Background()
	mode := replication.ModeSync
	if *async {
		mode = replication.ModeAsync
	}
	a, b := startPair(ctx, *key, mode)
	defer a.stop()
	defer b.stop()
	bn := &bench{s: a.s, mode: mode, attrs: *attrs, attrSize: *size / *attrs}

	if *quiet {
		rate, _ := bn.manyClients(*clients, *duration)
		fmt.Printf("%.0f\n", rate)
		return
	}
	fmt.Printf("GOMAXPROCS=%d, %s per measurement\n", runtime.GOMAXPROCS(0), *duration)
	bn.oneClient(*duration)
	rate, lat := bn.manyClients(*clients, *duration)
	fmt.Printf("troupe Save %s, %d clients                              p50 %6.1f µs  p99 %6.1f µs  %8.0f saves/s\n",
		mode, *clients, benchnet.Micros(benchnet.Percentile(lat, 50)), benchnet.Micros(benchnet.Percentile(lat, 99)), rate)
}

// bench saves sessions of attrs attributes of attrSize bytes (names
// included), changing the first attribute in each Save.
type bench struct {
	s        *replication.Sessions
	mode     replication.Mode
	attrs    int
	attrSize int
}

func (bn *bench) newSession() *replication.Session {
	ctx := context.Background()
	h, err := bn.s.Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for i := range bn.attrs {
		name := fmt.Sprintf("attribute-%03d", i)
		if err := h.Set(name, make([]byte, bn.attrSize-len(name))); err != nil {
			log.Fatal(err)
		}
	}
	if err := bn.s.Save(ctx, h); err != nil {
		log.Fatal(err)
	}
	if h.Route().Secondary == "" {
		log.Fatal("the session has no secondary")
	}
	return h
}

// change is the size of the value each Save sets.
func (bn *bench) change() int { return bn.attrSize - len("attribute-000") }

// save changes h with val, made distinct by i, saves it and returns the
// time it took.
func (bn *bench) save(h *replication.Session, val []byte, i int) time.Duration {
	val[0] = byte(i)
	t0 := time.Now()
	if err := h.Set("attribute-000", val); err != nil {
		log.Fatal(err)
	}
	if err := bn.s.Save(context.Background(), h); err != nil {
		log.Fatal(err)
	}
	return time.Since(t0)
}

// oneClient saves one session from one client, taking turns with the
// floor, for d in all, and prints p50 and p99 of both.
func (bn *bench) oneClient(d time.Duration) {
	h := bn.newSession()
	pp, err := benchnet.StartPingPong()
	if err != nil {
		log.Fatal(err)
	}
	defer pp.Close()
	val := make([]byte, bn.change())
	var floor, lat []time.Duration
	for i, end := 0, time.Now().Add(d); time.Now().Before(end); {
		f, err := pp.Run(turn)
		if err != nil {
			log.Fatal(err)
		}
		floor = append(floor, f...)
		for until := time.Now().Add(turn); time.Now().Before(until); i++ {
			lat = append(lat, bn.save(h, val, i))
		}
	}
	floor50, p50 := benchnet.Percentile(floor, 50), benchnet.Percentile(lat, 50)
	fmt.Printf("floor  raw TCP ping-pong 1 KiB/16 B     p50 %6.1f µs  p99 %6.1f µs\n",
		benchnet.Micros(floor50), benchnet.Micros(benchnet.Percentile(floor, 99)))
	fmt.Printf("troupe Save %s, 1 client, %d B session, %d B change   p50 %6.1f µs  p99 %6.1f µs  (%.1f× floor)\n",
		bn.mode, h.Size(), bn.change(), benchnet.Micros(p50), benchnet.Micros(benchnet.Percentile(lat, 99)), float64(p50)/float64(floor50))
}

// manyClients runs clients concurrent clients for d, each saving its own
// session, and returns the Saves per second and the latency of each.
func (bn *bench) manyClients(clients int, d time.Duration) (float64, []time.Duration) {
	sessions := make([]*replication.Session, clients)
	for i := range sessions {
		sessions[i] = bn.newSession()
	}
	var ops atomic.Int64
	lats := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			val := make([]byte, bn.change())
			for i := 0; time.Now().Before(end); i++ {
				lats[c] = append(lats[c], bn.save(sessions[c], val, i))
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	rate := float64(ops.Load()) / time.Since(start).Seconds()
	return rate, slices.Concat(lats...)
}

type node struct {
	c *membership.Cluster
	s *replication.Sessions
}

func (n *node) stop() {
	n.s.Shutdown()
	n.c.Shutdown()
}

func startPair(ctx context.Context, key bool, mode replication.Mode) (*node, *node) {
	start := func(name string, wellKnown ...string) *node {
		cfg := membership.Config{
			ClusterName: "benchsave",
			NodeName:    name,
			BindAddr:    "127.0.0.1:0",
			WellKnown:   wellKnown,
			Profile:     membership.ProfileLocal,
		}
		if key {
			cfg.SecretKeys = [][]byte{bytes.Repeat([]byte{42}, 32)}
		} else {
			cfg.Insecure = true // plaintext, to measure what the key costs
		}
		c, err := membership.New(ctx, cfg)
		if err != nil {
			log.Fatal(err)
		}
		s, err := replication.NewSessions(ctx, c, replication.Options{Mode: mode, Insecure: !key})
		if err != nil {
			log.Fatal(err)
		}
		return &node{c, s}
	}
	a := start("a")
	b := start("b", a.c.Addr())
	for _, n := range []*node{a, b} {
		if err := n.s.WaitPeers(ctx, 1); err != nil {
			log.Fatal(err)
		}
	}
	return a, b
}
