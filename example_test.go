package troupe_test

import (
	"context"
	"fmt"
	"time"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
)

// A node alone forms a cluster of one: it binds a name, selects it, pins
// a key and saves a session, then leaves.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node, err := troupe.Start(ctx, troupe.Config{
		Membership: membership.Config{
			ClusterName: "example",
			NodeName:    "node-1",
			BindAddr:    "127.0.0.1:0",
			Profile:     membership.ProfileLocal,
			SecretKeys:  [][]byte{membership.GenerateKey()}, // the same key on every node
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Shutdown()

	_ = node.Names().Bind(ctx, "http/orders", []byte("http://127.0.0.1:8080"), naming.Clusterable())
	offer, _ := node.Names().Select("http/orders", naming.RoundRobin())
	fmt.Printf("http/orders -> %s on %s\n", offer.Value, offer.Node)

	pin, _ := node.Pins().Pin(ctx, "cart/42")
	fmt.Println("cart/42 pinned to", pin.Owner)

	s, _ := node.Sessions().Create(ctx)
	_ = s.Set("user", []byte("ana"))
	_ = node.Sessions().Save(ctx, s)
	user, _ := s.Get("user")
	fmt.Println("session user:", string(user))

	fmt.Println("leave:", node.Leave(ctx))
	// Output:
	// http/orders -> http://127.0.0.1:8080 on node-1
	// cart/42 pinned to node-1
	// session user: ana
	// leave: <nil>
}
