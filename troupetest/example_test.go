package troupetest_test

import (
	"context"
	"fmt"

	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/troupetest"
)

// Four nodes share a name; a partition cuts them in two halves, each of
// which declares the other failed, and the cluster merges again when the
// partition heals.
func Example() {
	t := newExampleT() // in a test: the test's *testing.T
	defer t.done()

	tc := troupetest.Start(t, 4)
	ctx := context.Background()

	// A confirmed Bind returns once every member holds the binding.
	err := tc.Node(0).Names().Bind(ctx, "svc/orders", []byte("http://127.0.0.2:8080"), naming.Confirmed())
	fmt.Println("bind:", err)
	b, _ := tc.Node(3).Names().Lookup("svc/orders")
	fmt.Println("node-3 finds svc/orders on", b.Offers[0].Node)

	tc.Partition([]int{0, 1}, []int{2, 3})
	tc.WaitMembers(2)
	fmt.Println("partitioned: node-0 sees", tc.Node(0).Cluster().NumMembers(), "members, node-3 sees", tc.Node(3).Cluster().NumMembers())

	tc.Heal()
	tc.WaitMembers(4)
	fmt.Println("healed: node-3 sees", tc.Node(3).Cluster().NumMembers())

	// Output:
	// bind: <nil>
	// node-3 finds svc/orders on node-0
	// partitioned: node-0 sees 2 members, node-3 sees 2
	// healed: node-3 sees 4
}
