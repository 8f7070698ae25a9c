package pins_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication/pins"
)

// exampleKey is the cluster key of the examples' nodes.
var exampleKey = membership.GenerateKey()

// node is one member with its naming tree and pins, for the examples.
type node struct {
	c    *membership.Cluster
	tree *naming.Tree
	pins *pins.Pins
}

func (n node) shutdown() {
	n.pins.Shutdown()
	n.tree.Close()
	n.c.Shutdown()
}

// startNodes starts members on loopback that join the first one; tags
// sets each one's member tags.
func startNodes(ctx context.Context, cluster string, n int, tags func(i int) map[string]string) []node {
	var nodes []node
	for i := range n {
		cfg := membership.Config{
			ClusterName: cluster,
			NodeName:    fmt.Sprintf("node-%d", i),
			BindAddr:    "127.0.0.1:0",
			Profile:     membership.ProfileLocal,
			SecretKeys:  [][]byte{exampleKey},
		}
		if tags != nil {
			cfg.Tags = tags(i)
		}
		if i > 0 {
			cfg.WellKnown = []string{nodes[0].c.Addr()}
		}
		c, err := membership.New(ctx, cfg)
		if err != nil {
			log.Fatal(err)
		}
		tree, err := naming.New(c, naming.Options{})
		if err != nil {
			log.Fatal(err)
		}
		p, err := pins.New(ctx, c, tree, pins.Options{})
		if err != nil {
			log.Fatal(err)
		}
		nodes = append(nodes, node{c, tree, p})
	}
	for _, n := range nodes {
		for n.c.NumMembers() < len(nodes) {
			time.Sleep(10 * time.Millisecond) // an example has no test deadline helper
		}
	}
	return nodes
}

// Two nodes pin the same key: both are told the same single owner, and
// every node finds it in its copy of the naming tree.
func ExamplePins_Pin() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := startNodes(ctx, "example-pin", 2, nil)
	defer func() {
		for _, n := range nodes {
			n.shutdown()
		}
	}()

	a, err := nodes[0].pins.Pin(ctx, "carts/42")
	if err != nil {
		log.Fatal(err)
	}
	b, err := nodes[1].pins.Pin(ctx, "carts/42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("owner:", a.Owner, "same for both:", a == b)

	owner, err := nodes[1].pins.Owner("carts/42") // local, no network
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("node-1 sees owner:", owner.Owner)
	// Output:
	// owner: node-0 same for both: true
	// node-1 sees owner: node-0
}

// Handler serves a pinned object's requests on any node: the owner
// serves them, every other node forwards them to it.
func ExamplePins_Handler() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Each node's HTTP server listens before the node starts, so that its
	// address can be published in the member tag pins.DefaultHTTPTag.
	var listeners []net.Listener
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		listeners = append(listeners, ln)
	}
	nodes := startNodes(ctx, "example-pin-handler", 2, func(i int) map[string]string {
		return map[string]string{pins.DefaultHTTPTag: listeners[i].Addr().String()}
	})
	defer func() {
		for _, n := range nodes {
			n.shutdown()
		}
	}()
	keyOf := func(r *http.Request) string { return strings.TrimPrefix(r.URL.Path, "/") }
	for i, n := range nodes {
		name := n.c.Name()
		local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s served by %s", r.URL.Path, name)
		})
		srv := httptest.NewUnstartedServer(n.pins.Handler(keyOf, local))
		srv.Listener = listeners[i]
		srv.Start()
		defer srv.Close()
	}

	if _, err := nodes[0].pins.Pin(ctx, "carts/7"); err != nil {
		log.Fatal(err)
	}
	for {
		if _, err := nodes[1].pins.Owner("carts/7"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond) // until node-1's copy of the tree has the pin
	}
	resp, err := http.Get("http://" + listeners[1].Addr().String() + "/carts/7") // node-1 forwards
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output:
	// /carts/7 served by node-0
}

// A singleton service runs on one registered node at a time; its token
// fences an older instance out of a shared store.
func ExamplePins_RunSingleton() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := startNodes(ctx, "example-singleton", 2, nil)
	defer func() {
		for _, n := range nodes {
			n.shutdown()
		}
	}()

	started := make(chan string, 2)
	for _, n := range nodes {
		name := n.c.Name()
		_, err := n.pins.RunSingleton(ctx, "jms/orders", func(ctx context.Context, token uint64) {
			started <- name
			<-ctx.Done() // serve the queue until the singleton moves or stops
		}, pins.PreferNode("node-1"))
		if err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("running on:", <-started)
	// Output:
	// running on: node-1
}
