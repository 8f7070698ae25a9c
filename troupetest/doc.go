// Package troupetest starts Troupe clusters inside a test and breaks
// their network on purpose, in the manner of net/http/httptest. What a
// service built on Troupe does when a peer crashes, leaves, is cut off or
// is slow can be tested in one process, on loopback, without root,
// containers or netem.
//
// # Starting
//
// Start starts n troupe.Nodes in the test's process and returns once each
// sees all n as members:
//
//	func TestCheckout(t *testing.T) {
//		tc := troupetest.Start(t, 3)
//		ctx := t.Context()
//		err := tc.Node(0).Names().Bind(ctx, "svc/cart", addr, naming.Confirmed())
//		...
//		b, err := tc.Node(2).Names().Lookup("svc/cart")
//		...
//	}
//
// Node i listens on its own loopback address, Host(i) (127.0.0.2 for node
// 0, 127.0.0.3 for node 1, …), on free ports, so that faults can tell the
// nodes apart by IP. The nodes use membership.ProfileLocal timings, so a
// crash is noticed within seconds; they share a random cluster key made
// for this Cluster alone, so parallel tests never mix; and they log to
// t.Log, each line prefixed with the node's name. WithConfig changes any
// of this, node by node. Add starts one more node later.
//
// # Breaking the network
//
// The nodes of a Cluster share one Network, which every node consults for
// all its traffic: gossip, state exchange, calls between nodes. Cut(i, j)
// cuts two nodes apart; Isolate(i) cuts one off from all the others;
// Partition splits the cluster into sides; Delay(i, j, d) slows the
// traffic between two nodes down; Heal undoes it all. A cut closes the
// connections that cross it, as a reset would, and drops packets, so each
// side sees the other fail after the failure detector's timeout; after
// Heal the cluster merges again by itself.
//
// A node cut off alone takes longer to declare the others failed (about 20 s
// with ProfileLocal) than a side with two nodes or more (about 4 s): with
// no peer to confirm its suspicions, memberlist's Lifeguard waits its
// longest suspicion timeout, and it slows its own probes down, since it
// looks like the unhealthy one.
//
// Wait for such outcomes with WaitMembers, which polls until a deadline and
// fails the test if the deadline passes; never sleep for them:
//
//	tc.Partition([]int{0, 1}, []int{2})
//	tc.WaitMembers(2, 0, 1) // nodes 0 and 1 see only each other
//	tc.WaitMembers(1, 2)    // node 2 sees only itself
//	tc.Heal()
//	tc.WaitMembers(3)
//
// A Network also works without a Cluster: give NewNetwork() to the Faults
// field of each node's membership.Config (it implements membership.Network)
// and break it by IP address.
//
// # Crashing and leaving
//
// Kill(i) stops node i at once, as a crash would: its peers declare it
// failed and take over its sessions, pins and singletons. Leave(i) hands
// all that over first, and its peers see a graceful leave. Either way,
// WaitMembers(n-1) then waits for the others to agree.
//
// # Stopping
//
// Everything stops when the test ends (t.Cleanup): each node is shut down
// and waits for its goroutines, so a goroutine leak checker such as
// go.uber.org/goleak run after the tests finds nothing of Troupe's.
//
// # Limits
//
// Faults act inside the nodes' own transports, by IP address: other
// traffic of the process is not affected, and neither are nodes whose
// Membership.Faults is nil. Multicast announcements can be cut but not
// delayed. Hosts other than 127.0.0.1 need loopback aliases on systems
// other than Linux (see Cluster.Host).
package troupetest
