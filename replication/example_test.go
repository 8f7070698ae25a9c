package replication_test

import (
	"context"
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/replication"
)

// Two nodes on loopback: a session created and saved on one is read on
// the other, which takes it over.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := func(name string, wellKnown ...string) (*membership.Cluster, *replication.Sessions) {
		c, err := membership.New(ctx, membership.Config{
			ClusterName: "example",
			NodeName:    name,
			BindAddr:    "127.0.0.1:0",
			WellKnown:   wellKnown,
			Profile:     membership.ProfileLocal,
		})
		if err != nil {
			log.Fatal(err)
		}
		s, err := replication.NewSessions(ctx, c, replication.Options{})
		if err != nil {
			log.Fatal(err)
		}
		return c, s
	}
	ca, a := start("a")
	defer ca.Shutdown()
	defer a.Shutdown()
	cb, b := start("b", ca.Addr())
	defer cb.Shutdown()
	defer b.Shutdown()
	// Wait until each node sees the other's session transport.
	for !slices.Contains(a.Peers(), "b") || !slices.Contains(b.Peers(), "a") {
		time.Sleep(10 * time.Millisecond)
	}

	s, err := a.Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := replication.SetValue(s, "user", "ana"); err != nil {
		log.Fatal(err)
	}
	if err := a.Save(ctx, s); err != nil { // b has the change when Save returns
		log.Fatal(err)
	}
	route := s.Route()
	fmt.Println("primary is a:", route.Primary == a.NodeID(), "secondary is b:", route.Secondary == b.NodeID())

	s2, err := b.Get(ctx, s.ID()) // b takes the session over
	if err != nil {
		log.Fatal(err)
	}
	user, _, _ := replication.GetValue[string](s2, "user")
	fmt.Println("user:", user)
	fmt.Println("primary is b:", s2.Route().Primary == b.NodeID(), "secondary is a:", s2.Route().Secondary == a.NodeID())
	// Output:
	// primary is a: true secondary is b: true
	// user: ana
	// primary is b: true secondary is a: true
}
