// Command quickstart is the tour of Troupe: in one process, on loopback,
// with no setup, three nodes form a cluster, one crashes and the others
// report it failed, and one leaves gracefully.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/troupe-go/troupe/membership"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	fmt.Println("== Three nodes form a cluster on loopback")
	roles := []string{"manager", "worker", "worker"}
	var nodes []*membership.Cluster
	for i, role := range roles {
		cfg := membership.Config{
			ClusterName: "quickstart",
			NodeName:    fmt.Sprintf("node-%d", i+1),
			Role:        role,
			Group:       fmt.Sprintf("rack-%d", i%2+1),
			BindAddr:    fmt.Sprintf("127.0.0.%d:0", i+1), // port 0: any free port
			Profile:     membership.ProfileLocal,          // fast timings for one host
		}
		if i > 0 {
			cfg.WellKnown = []string{nodes[0].Addr()} // the manager is the well-known member
		}
		n, err := membership.New(ctx, cfg)
		if err != nil {
			return err
		}
		defer n.Shutdown()
		nodes = append(nodes, n)
	}
	if err := waitFor(ctx, "every node sees three members", func() bool {
		for _, n := range nodes {
			if n.NumMembers() != 3 {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	for _, m := range nodes[0].Members() {
		fmt.Printf("   %-7s %-8s %-7s %s\n", m.Name, m.Role, m.Group, m.Addr)
	}

	sub := nodes[0].Subscribe()
	defer sub.Close()
	for range 3 { // a subscription starts with the current members
		<-sub.Events()
	}

	fmt.Println("\n== node-3 crashes (no goodbye); the others detect it")
	start := time.Now()
	nodes[2].Shutdown()
	ev, err := nextEvent(ctx, sub)
	if err != nil {
		return err
	}
	fmt.Printf("   node-1 reports: %s %s after %.1fs\n", ev.Member.Name, ev.Type, time.Since(start).Seconds())

	fmt.Println("\n== node-2 leaves gracefully")
	if err := nodes[1].Leave(ctx); err != nil {
		return err
	}
	ev, err = nextEvent(ctx, sub)
	if err != nil {
		return err
	}
	fmt.Printf("   node-1 reports: %s %s\n", ev.Member.Name, ev.Type)
	fmt.Printf("   node-1 now sees %d member(s)\n", nodes[0].NumMembers())
	return nil
}

func nextEvent(ctx context.Context, sub *membership.Subscription) (membership.Event, error) {
	select {
	case ev := <-sub.Events():
		return ev, nil
	case <-ctx.Done():
		return membership.Event{}, ctx.Err()
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, what string, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting until %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
