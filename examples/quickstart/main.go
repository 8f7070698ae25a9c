// Command quickstart is the tour of Troupe: in one process, on loopback,
// with no setup, nodes form a cluster, offer a service under a clusterable
// name, keep a session alive through the crash of its primary, move a
// pinned object after the crash of its owner, and leave gracefully.
//
//	go run ./examples/quickstart
//
// Crashes here are Node.Shutdown, which stops a node without a word to
// the others, as a killed process would.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication/pins"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	// The tour takes about 15 s. The bound is generous because failure
	// detection slows down on a loaded machine (see membership.Profile).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// nodes[i] is node-(i+1), on 127.0.0.(i+1).
	var nodes []*troupe.Node
	key := membership.GenerateKey() // a real cluster reads it from a file: head -c 32 /dev/urandom | base64
	defer func() {
		for _, n := range nodes {
			n.Shutdown() // safe after a crash or a Leave
		}
	}()
	start := func(role string) error {
		i := len(nodes)
		cfg := troupe.Config{Membership: membership.Config{
			ClusterName: "quickstart",
			NodeName:    fmt.Sprintf("node-%d", i+1),
			Role:        role,
			Group:       fmt.Sprintf("rack-%d", i%2+1),
			BindAddr:    fmt.Sprintf("127.0.0.%d:0", i+1), // port 0: any free port
			Profile:     membership.ProfileLocal,          // fast timings for one host
			SecretKeys:  [][]byte{key},                    // every node of the cluster has the same key
		}}
		if i > 0 {
			cfg.Membership.WellKnown = []string{nodes[0].Cluster().Addr()} // the manager is the well-known member
		}
		n, err := troupe.Start(ctx, cfg)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		return nil
	}
	allSee := func(members int) func() bool {
		return func() bool {
			for _, n := range nodes {
				if n.Cluster().NumMembers() != members || len(n.Sessions().Peers()) != members-1 {
					return false
				}
			}
			return true
		}
	}

	fmt.Println("== Three nodes form a cluster on loopback")
	for _, role := range []string{"manager", "worker", "worker"} {
		if err := start(role); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, "every node sees three members", allSee(3)); err != nil {
		return err
	}
	for _, m := range nodes[0].Cluster().Members() {
		fmt.Printf("   %-7s %-8s %-7s %s\n", m.Name, m.Role, m.Group, m.Addr)
	}

	fmt.Println("\n== Two more workers join, so that the cluster can lose two nodes below and keep a majority")
	for range 2 {
		if err := start("worker"); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, "every node sees five members", allSee(5)); err != nil {
		return err
	}
	for _, m := range nodes[0].Cluster().Members()[3:] {
		fmt.Printf("   %-7s %-8s %-7s %s\n", m.Name, m.Role, m.Group, m.Addr)
	}
	manager, worker2, worker3, worker4, worker5 := nodes[0], nodes[1], nodes[2], nodes[3], nodes[4]

	fmt.Println("\n== Names: node-2 and node-3 serve http/orders; the manager balances over them")
	for _, n := range []*troupe.Node{worker2, worker3} {
		host, _, err := net.SplitHostPort(n.Cluster().Addr())
		if err != nil {
			return err
		}
		// Each serves HTTP on its own address, and binds the URL there.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "order list from %s", n.Name())
		})}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		url := "http://" + ln.Addr().String()
		if err := n.Names().Bind(ctx, "http/orders", []byte(url), naming.Clusterable()); err != nil {
			return err
		}
		fmt.Printf("   %s binds http/orders = %s\n", n.Name(), url)
	}
	if err := waitFor(ctx, "the manager sees both offers", func() bool {
		b, err := manager.Names().Lookup("http/orders")
		return err == nil && len(b.Offers) == 2
	}); err != nil {
		return err
	}
	// A replica-aware RoundTripper sends each request to one offer, in
	// turn, and to another when one is down.
	rt, err := naming.NewRoundTripper(manager.Names(), "http/orders", naming.RoundRobin(), naming.RoundTripperOptions{})
	if err != nil {
		return err
	}
	client := &http.Client{Transport: rt, Timeout: 5 * time.Second}
	for i := range 4 {
		resp, err := client.Get("http://orders/")
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		fmt.Printf("   GET %d: %s\n", i+1, body)
	}

	fmt.Println("\n== Sessions: a session outlives the crash of its primary")
	s, err := worker2.Sessions().Create(ctx)
	if err != nil {
		return err
	}
	for _, cart := range []string{"1 book", "2 books"} {
		if err := s.Set("cart", []byte(cart)); err != nil {
			return err
		}
		if err := worker2.Sessions().Save(ctx, s); err != nil { // the secondary has it when Save returns
			return err
		}
		fmt.Printf("   node-2 saves cart = %q\n", cart)
	}
	id := s.ID()
	fmt.Printf("   session id %s\n", id)
	fmt.Printf("   route: primary %s, secondary %s\n", nameOf(nodes, s.Route().Primary), nameOf(nodes, s.Route().Secondary))
	secondary := nodeOf(nodes, s.Route().Secondary)
	if secondary == nil {
		return fmt.Errorf("session %s has no secondary", id)
	}
	fmt.Println("   node-2 crashes")
	crashed := time.Now()
	worker2.Shutdown()
	s, err = secondary.Sessions().Get(ctx, id) // the client's next request, sent to the secondary
	if err != nil {
		return err
	}
	cart, _ := s.Get("cart")
	fmt.Printf("   %s reads cart = %q\n", secondary.Name(), cart)
	fmt.Printf("   new id %s\n", s.ID())
	fmt.Printf("   route: primary %s, secondary %s\n", nameOf(nodes, s.Route().Primary), nameOf(nodes, s.Route().Secondary))
	// The secondary did not wait for failure detection: node-2's session
	// port refused the connection. The cluster needs a few seconds more.
	live := []*troupe.Node{manager, worker3, worker4, worker5}
	if err := waitFor(ctx, "every node declares node-2 failed", gone(live, worker2.Name())); err != nil {
		return err
	}
	fmt.Printf("   the others declare node-2 failed %.1fs after the crash\n", time.Since(crashed).Seconds())

	fmt.Println("\n== Pins: a pinned object moves after its owner crashes")
	w, err := manager.Pins().Watch(ctx, "orders/")
	if err != nil {
		return err
	}
	defer w.Close()
	pin, err := worker3.Pins().Pin(ctx, "orders/42")
	if err != nil {
		return err
	}
	fmt.Printf("   %s pins orders/42 (token %d); node-1 watches orders/\n", pin.Owner, pin.Token)
	if _, err := nextPinEvent(ctx, w, pins.Acquired); err != nil {
		return err
	}
	fmt.Printf("   %s crashes\n", pin.Owner)
	crashed = time.Now()
	worker3.Shutdown()
	ev, err := nextPinEvent(ctx, w, pins.Lost)
	if err != nil {
		return err
	}
	fmt.Printf("   node-1 sees %s %s after %.1fs: %s\n", ev.Pin.Key, ev.Type, time.Since(crashed).Seconds(), ev.Reason)
	// Pin asks every live member; wait until none of them still counts
	// node-3 in.
	live = []*troupe.Node{manager, worker4, worker5}
	if err := waitFor(ctx, "every node declares node-3 failed", gone(live, worker3.Name())); err != nil {
		return err
	}
	repin, err := worker4.Pins().Pin(ctx, "orders/42")
	if err != nil {
		return err
	}
	fmt.Printf("   node-4 pins orders/42 again: owner %s, token %d (> %d: the old owner's writes can be refused)\n",
		repin.Owner, repin.Token, ev.Pin.Token)

	fmt.Println("\n== node-5 leaves gracefully; the others see a leave, not a failure")
	subs := []*membership.Subscription{manager.Cluster().Subscribe(), worker4.Cluster().Subscribe()}
	for _, sub := range subs {
		defer sub.Close()
	}
	if err := worker5.Leave(ctx); err != nil {
		return err
	}
	for i, n := range []*troupe.Node{manager, worker4} {
		ev, err := nextEventOf(ctx, subs[i], worker5.Name())
		if err != nil {
			return err
		}
		fmt.Printf("   %s reports: %s %s\n", n.Name(), ev.Member.Name, ev.Type)
	}
	var left []string
	for _, m := range manager.Cluster().Members() {
		left = append(left, m.Name)
	}
	fmt.Printf("   node-1 now sees %d members: %v\n", len(left), left)

	fmt.Println("\n== Next: an application server as processes, with a load balancer and a console")
	fmt.Println("   the README's walkthrough: one manager, two workers and the proxy on 127.0.0.x")
	return nil
}

// gone reports whether none of nodes sees the named member alive.
func gone(nodes []*troupe.Node, name string) func() bool {
	return func() bool {
		for _, n := range nodes {
			if _, ok := n.Cluster().Member(name); ok {
				return false
			}
		}
		return true
	}
}

// nodeOf returns the node whose id in session routes is id, or nil.
func nodeOf(nodes []*troupe.Node, id string) *troupe.Node {
	for _, n := range nodes {
		if n.Sessions().NodeID() == id {
			return n
		}
	}
	return nil
}

// nameOf returns the name of the node whose id in session routes is id.
func nameOf(nodes []*troupe.Node, id string) string {
	if n := nodeOf(nodes, id); n != nil {
		return n.Name()
	}
	return "none"
}

// nextPinEvent returns the watcher's next event of type typ, skipping
// others.
func nextPinEvent(ctx context.Context, w *pins.Watcher, typ pins.EventType) (pins.Event, error) {
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return pins.Event{}, errors.New("pin watcher stopped")
			}
			if ev.Type == typ {
				return ev, nil
			}
		case <-ctx.Done():
			return pins.Event{}, fmt.Errorf("waiting for a pin %s event: %w", typ, ctx.Err())
		}
	}
}

// nextEventOf returns the subscription's next leave or failure of the
// named member, skipping the rest (a subscription starts with a join for
// every member; a leaving node also updates its tags).
func nextEventOf(ctx context.Context, sub *membership.Subscription, name string) (membership.Event, error) {
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				return membership.Event{}, errors.New("subscription closed")
			}
			if ev.Member.Name == name && (ev.Type == membership.EventLeave || ev.Type == membership.EventFail) {
				return ev, nil
			}
		case <-ctx.Done():
			return membership.Event{}, fmt.Errorf("waiting for news of %s: %w", name, ctx.Err())
		}
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
