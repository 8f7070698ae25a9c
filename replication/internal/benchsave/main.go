// Command benchsave measures, in one run on loopback: the round-trip
// floor (a ping-pong on one persistent TCP connection), then sync-
// replicated Saves between two nodes — p50 and p99 with one client, and
// throughput with many concurrent clients each saving its own session.
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
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/internal/benchnet"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/replication"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "how long each measurement runs")
	clients := flag.Int("clients", 64, "concurrent clients for the throughput run, one session each")
	size := flag.Int("size", 1024, "session size in bytes (attribute names included)")
	attrs := flag.Int("attrs", 8, "attributes in the session; each Save changes one of them")
	key := flag.Bool("key", true, "encrypt and authenticate with a cluster key")
	async := flag.Bool("async", false, "ModeAsync instead of ModeSync")
	quiet := flag.Bool("quiet", false, "print only the throughput line's number")
	flag.Parse()
	if *attrs < 1 || *size/(*attrs) < 16 {
		log.Fatal("need at least 1 attribute and 16 bytes per attribute")
	}

	out := os.Stdout
	if *quiet {
		out = nil
	}
	say := func(format string, args ...any) {
		if out != nil {
			fmt.Fprintf(out, format, args...)
		}
	}
	say("GOMAXPROCS=%d, %s per measurement\n", runtime.GOMAXPROCS(0), *duration)

	floor := pingPong(*duration)
	floor50 := benchnet.Percentile(floor, 50)
	say("floor  raw TCP ping-pong 1 KiB/16 B     p50 %6.1f µs  p99 %6.1f µs\n", benchnet.Micros(floor50), benchnet.Micros(benchnet.Percentile(floor, 99)))

	ctx := context.Background()
	mode := replication.ModeSync
	if *async {
		mode = replication.ModeAsync
	}
	a, b := startPair(ctx, *key, mode)
	defer a.stop()
	defer b.stop()

	attrSize := *size / *attrs
	newSession := func() *replication.Session {
		h, err := a.s.Create(ctx)
		if err != nil {
			log.Fatal(err)
		}
		for i := range *attrs {
			name := fmt.Sprintf("attribute-%03d", i)
			if err := h.Set(name, make([]byte, attrSize-len(name))); err != nil {
				log.Fatal(err)
			}
		}
		if err := a.s.Save(ctx, h); err != nil {
			log.Fatal(err)
		}
		return h
	}
	save := func(h *replication.Session, val []byte, i int) time.Duration {
		val[0] = byte(i)
		t0 := time.Now()
		if err := h.Set("attribute-000", val); err != nil {
			log.Fatal(err)
		}
		if err := a.s.Save(ctx, h); err != nil {
			log.Fatal(err)
		}
		return time.Since(t0)
	}
	change := attrSize - len("attribute-000")

	// One client.
	h := newSession()
	if h.Route().Secondary == "" {
		log.Fatal("the session has no secondary")
	}
	val := make([]byte, change)
	var lat []time.Duration
	for i, end := 0, time.Now().Add(*duration); time.Now().Before(end); i++ {
		lat = append(lat, save(h, val, i))
	}
	p50 := benchnet.Percentile(lat, 50)
	say("troupe Save %s, 1 client, %d B session, %d B change   p50 %6.1f µs  p99 %6.1f µs  (%.1f× floor)\n",
		mode, h.Size(), change, benchnet.Micros(p50), benchnet.Micros(benchnet.Percentile(lat, 99)), float64(p50)/float64(floor50))

	// Many clients.
	sessions := make([]*replication.Session, *clients)
	for i := range sessions {
		sessions[i] = newSession()
	}
	var ops atomic.Int64
	lats := make([][]time.Duration, *clients)
	var wg sync.WaitGroup
	end := time.Now().Add(*duration)
	start := time.Now()
	for c := range *clients {
		wg.Go(func() {
			val := make([]byte, change)
			for i := 0; time.Now().Before(end); i++ {
				lats[c] = append(lats[c], save(sessions[c], val, i))
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lats...)
	rate := float64(ops.Load()) / elapsed.Seconds()
	say("troupe Save %s, %d clients                              p50 %6.1f µs  p99 %6.1f µs  %8.0f saves/s\n",
		mode, *clients, benchnet.Micros(benchnet.Percentile(all, 50)), benchnet.Micros(benchnet.Percentile(all, 99)), rate)
	if *quiet {
		fmt.Printf("%.0f\n", rate)
	}
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
		}
		c, err := membership.New(ctx, cfg)
		if err != nil {
			log.Fatal(err)
		}
		s, err := replication.NewSessions(ctx, c, replication.Options{Mode: mode})
		if err != nil {
			log.Fatal(err)
		}
		return &node{c, s}
	}
	a := start("a")
	b := start("b", a.c.Addr())
	for !slices.Contains(a.s.Peers(), "b") || !slices.Contains(b.s.Peers(), "a") {
		time.Sleep(10 * time.Millisecond)
	}
	return a, b
}

// pingPong measures the floor (see internal/benchnet) for d.
func pingPong(d time.Duration) []time.Duration {
	p, err := benchnet.StartPingPong()
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	lat, err := p.Run(d)
	if err != nil {
		log.Fatal(err)
	}
	return lat
}
