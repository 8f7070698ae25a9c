package naming_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
)

// exampleKey is the cluster key of the examples' nodes: every node of a
// cluster has the same one.
var exampleKey = membership.GenerateKey()

// startTrees starts n members on loopback, joined through the first, with
// a naming tree each; stop shuts them down.
func startTrees(ctx context.Context, cluster string, n int) (trees []*naming.Tree, stop func()) {
	var nodes []*membership.Cluster
	stop = func() {
		for i := range trees {
			trees[i].Close()
			nodes[i].Shutdown()
		}
	}
	for i := range n {
		cfg := membership.Config{
			ClusterName: cluster,
			NodeName:    fmt.Sprintf("node-%d", i),
			BindAddr:    "127.0.0.1:0",
			Profile:     membership.ProfileLocal,
			SecretKeys:  [][]byte{exampleKey},
		}
		if i > 0 {
			cfg.WellKnown = []string{nodes[0].Addr()}
		}
		node, err := membership.New(ctx, cfg)
		if err != nil {
			log.Fatal(err)
		}
		tree, err := naming.New(node, naming.Options{})
		if err != nil {
			log.Fatal(err)
		}
		nodes, trees = append(nodes, node), append(trees, tree)
	}
	return trees, stop
}

// Three members on loopback each offer the same clusterable service;
// any member looks it up and picks an offer.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	trees, stop := startTrees(ctx, "example-naming", 3)
	defer stop()

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

// A policy is a function of a name's live offers, so a custom one is a
// PolicyFunc. This one keeps to the caller's zone (the offering members'
// membership Group) and takes those offers in turn, and uses every offer
// only when the zone has none: a replica in another zone costs more but
// beats no answer. Pass it to Tree.Select or NewRoundTripper; here it is
// called on candidates built by hand, as a test of a policy would do.
func ExamplePolicyFunc() {
	sameZone := func(zone string) naming.Policy {
		inZone := naming.Filter(func(c naming.Candidate) bool { return c.Member.Group == zone }, naming.RoundRobin())
		anywhere := naming.RoundRobin()
		return naming.PolicyFunc(func(cands []naming.Candidate) int {
			if i := inZone.Pick(cands); i >= 0 {
				return i
			}
			return anywhere.Pick(cands)
		})
	}
	// What Select passes a policy: the live offers in node order. A policy
	// may reorder the slice (Filter does), so each pick gets a fresh one.
	offers := func() []naming.Candidate {
		var cands []naming.Candidate
		for i, zone := range []string{"a", "b", "a"} {
			node := fmt.Sprintf("node-%d", i)
			cands = append(cands, naming.Candidate{
				Offer:  naming.Offer{Node: node, Value: []byte("http://" + node + ":8080")},
				Member: membership.Member{Name: node, Meta: membership.Meta{Group: zone}},
			})
		}
		return cands
	}
	for _, zone := range []string{"a", "c"} {
		p := sameZone(zone)
		for range 3 {
			cands := offers()
			fmt.Println("zone", zone, "picks", cands[p.Pick(cands)].Node)
		}
	}
	// Output:
	// zone a picks node-0
	// zone a picks node-2
	// zone a picks node-0
	// zone c picks node-0
	// zone c picks node-1
	// zone c picks node-2
}

// A watcher first reports the names already bound under its prefix, then
// every change, in the order this node applied them.
func ExampleTree_Watch() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	node, err := membership.New(ctx, membership.Config{
		ClusterName: "example-watch",
		NodeName:    "node-0",
		BindAddr:    "127.0.0.1:0",
		Profile:     membership.ProfileLocal,
		SecretKeys:  [][]byte{exampleKey},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Shutdown()
	tree, err := naming.New(node, naming.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer tree.Close()

	must := func(err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	must(tree.Bind(ctx, "jms/queues/Orders", []byte("10.0.0.1:7001")))
	must(tree.Bind(ctx, "ejb/OrderService", []byte("10.0.0.1:8080"))) // not under "jms"

	w, err := tree.Watch(ctx, "jms")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	must(tree.Rebind(ctx, "jms/queues/Orders", []byte("10.0.0.2:7001")))
	must(tree.Bind(ctx, "jms/queues/Invoices", []byte("10.0.0.1:7002")))
	must(tree.Unbind(ctx, "jms/queues/Orders"))

	for range 4 {
		ev, ok := <-w.Events()
		if !ok {
			log.Fatal("watcher stopped: ", w.Err())
		}
		if ev.Type == naming.EventUnbound {
			fmt.Println(ev.Type, ev.Name)
			continue
		}
		fmt.Println(ev.Type, ev.Name, string(ev.Binding.Offers[0].Value))
	}
	// Output:
	// bound jms/queues/Orders 10.0.0.1:7001
	// rebound jms/queues/Orders 10.0.0.2:7001
	// bound jms/queues/Invoices 10.0.0.1:7002
	// unbound jms/queues/Orders
}

// Three members each serve orders over HTTP and offer their base URL
// under one clusterable name. A client on any member sends its requests
// through a RoundTripper, which aims each one at an offer: the request's
// host is replaced by the offer's, its path appended to the offer's path.
// A GET to an offer that refuses the connection is sent to another offer.
func ExampleNewRoundTripper() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	trees, stop := startTrees(ctx, "example-roundtripper", 3)
	defer stop()
	var servers []*httptest.Server
	for i, tree := range trees {
		// The provider: an HTTP server on 127.0.0.1 that names its node.
		name := fmt.Sprintf("node-%d", i)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, name, r.Method, r.URL.Path)
		}))
		defer srv.Close()
		servers = append(servers, srv)
		if err := tree.Bind(ctx, "http/orders", []byte(srv.URL+"/api"), naming.Clusterable()); err != nil {
			log.Fatal(err)
		}
	}

	// Wait until node-0 sees all three offers live (a policy is told the
	// live offers, so one that only counts them is a probe).
	var live int
	count := naming.PolicyFunc(func(cands []naming.Candidate) int { live = len(cands); return 0 })
	for {
		if _, err := trees[0].Select("http/orders", count); err == nil && live == 3 {
			break
		}
		if ctx.Err() != nil {
			log.Fatal("offers did not arrive: ", ctx.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}

	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	rt, err := naming.NewRoundTripper(trees[0], "http/orders", naming.RoundRobin(), naming.RoundTripperOptions{Base: transport})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: rt}
	get := func() {
		// The host of the URL is ignored: the offer's replaces it.
		resp, err := client.Get("http://orders/items/7")
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(string(body))
	}
	for range 3 {
		get()
	}
	// node-1's provider dies. Its offer stays until the cluster notices,
	// but the GET that picks it is refused and sent to another offer.
	servers[1].Close()
	for range 2 {
		get()
	}
	// Output:
	// node-0 GET /api/items/7
	// node-1 GET /api/items/7
	// node-2 GET /api/items/7
	// node-0 GET /api/items/7
	// node-2 GET /api/items/7
}
