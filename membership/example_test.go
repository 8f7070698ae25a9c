package membership_test

import (
	"context"
	"fmt"

	"github.com/troupe-go/troupe/membership"
)

func Example() {
	ctx := context.Background()
	key := membership.GenerateKey() // every node of a cluster shares its key
	start := func(name, addr string, wellKnown ...string) *membership.Cluster {
		c, err := membership.New(ctx, membership.Config{
			ClusterName: "example",
			NodeName:    name,
			Role:        "worker",
			BindAddr:    addr,
			WellKnown:   wellKnown,
			Profile:     membership.ProfileLocal,
			SecretKeys:  [][]byte{key},
		})
		if err != nil {
			panic(err)
		}
		return c
	}
	a := start("a", "127.0.0.1:0")
	defer a.Shutdown()
	sub := a.Subscribe()
	defer sub.Close()
	fmt.Println((<-sub.Events()).Member.Name, "is here")

	b := start("b", "127.0.0.1:0", a.Addr())
	ev := <-sub.Events()
	fmt.Println(ev.Member.Name, ev.Type, "as", ev.Member.Role)

	_ = b.Leave(ctx)
	ev = <-sub.Events()
	fmt.Println(ev.Member.Name, ev.Type)
	// Output:
	// a is here
	// b join as worker
	// b leave
}
