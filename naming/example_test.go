package naming_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
)

// Three members on loopback each offer the same clusterable service;
// any member looks it up and picks an offer.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var nodes []*membership.Cluster
	var trees []*naming.Tree
	for i := range 3 {
		cfg := membership.Config{
			ClusterName: "example-naming",
			NodeName:    fmt.Sprintf("node-%d", i),
			BindAddr:    "127.0.0.1:0",
			Profile:     membership.ProfileLocal,
		}
		if i > 0 {
			cfg.WellKnown = []string{nodes[0].Addr()}
		}
		node, err := membership.New(ctx, cfg)
		if err != nil {
			log.Fatal(err)
		}
		defer node.Shutdown()
		tree, err := naming.New(node, naming.Options{})
		if err != nil {
			log.Fatal(err)
		}
		defer tree.Close()
		nodes, trees = append(nodes, node), append(trees, tree)
	}

	// Each node offers the service at its own URL.
	for i, tree := range trees {
		url := fmt.Sprintf("http://10.0.0.%d:8080", i+1)
		if err := tree.Bind(ctx, "http/orders", []byte(url), naming.Clusterable()); err != nil {
			log.Fatal(err)
		}
	}
	// A typed, node-scoped binding.
	type queue struct{ Host, Name string }
	if err := naming.BindValue(ctx, trees[0], "jms/queues/Orders", queue{"10.0.0.1", "orders"}); err != nil {
		log.Fatal(err)
	}

	// Wait until node-2's copy has all three offers.
	for {
		b, err := trees[2].Lookup("http/orders")
		if err == nil && len(b.Offers) == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, _ := trees[2].Lookup("http/orders")
	for _, o := range b.Offers {
		fmt.Println(o.Node, string(o.Value))
	}

	// Round-robin over the offers, from any node.
	rr := naming.RoundRobin()
	for range 3 {
		o, _ := trees[2].Select("http/orders", rr)
		fmt.Println("picked", o.Node)
	}
	// Prefer this node's own offer.
	o, _ := trees[1].Select("http/orders", naming.PreferLocal(rr))
	fmt.Println("local", o.Node)

	for {
		q, err := naming.LookupValue[queue](trees[2], "jms/queues/Orders")
		if err == nil {
			fmt.Println("queue", q.Name, "on", q.Host)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output:
	// node-0 http://10.0.0.1:8080
	// node-1 http://10.0.0.2:8080
	// node-2 http://10.0.0.3:8080
	// picked node-0
	// picked node-1
	// picked node-2
	// local node-1
	// queue orders on 10.0.0.1
}
