// Package troupe lets Go application servers form a cluster that looks
// like one server to its clients, in the manner of WebLogic or the WSO2
// ESB: servers find each other by IP multicast or by well-known members,
// share a replicated naming tree, replicate session state from a primary
// to a secondary, and pin stateful objects and singleton services to one
// server at a time.
//
// # Start
//
// Every server calls Start with the same cluster name and a way to find
// the others, here a well-known member:
//
//	node, err := troupe.Start(ctx, troupe.Config{
//		Membership: membership.Config{
//			ClusterName: "shop",
//			BindAddr:    "10.0.0.7:7946",
//			WellKnown:   []string{"10.0.0.5:7946"},
//			SecretKeys:  [][]byte{key}, // the cluster's key, the same on every server
//		},
//		HTTPAddr: "10.0.0.7:8080", // where this server's HTTP handlers listen
//	})
//	if err != nil {
//		return err
//	}
//	defer node.Shutdown()
//
// Without SecretKeys, Start refuses to run (membership.Config.Insecure
// opts out, for tests on one host): the key authenticates and encrypts
// gossip and every node-to-node request. Make one with
// "head -c 32 /dev/urandom | base64" and read it with
// membership.DecodeKey. With WellKnown set, Start fails if no well-known
// member accepts this server within membership.Config.JoinTimeout,
// rather than run it as a cluster of one.
//
// Start joins the cluster and starts the four parts, each reachable from
// the Node: Cluster (members and their events), Names (the naming tree),
// Sessions (replicated sessions) and Pins (pinned objects and singleton
// services).
//
// # Run
//
// A server offers its services by binding them in the naming tree, and
// finds other servers' services there, choosing among several offers with
// a load-balancing policy:
//
//	node.Names().Bind(ctx, "http/orders", []byte("http://10.0.0.7:8080"), naming.Clusterable())
//	offer, err := node.Names().Select("http/orders", naming.RoundRobin())
//
// HTTP sessions are replicated to a secondary server as they are saved
// (Sessions().Middleware does it for a net/http handler), and survive the
// loss of either server. A stateful object lives on one server: Pins().Pin
// places it, Pins().Handler forwards requests for it to that server from
// any other, and Pins().Watch tells when its server is lost, so that the
// application can pin it again elsewhere. A singleton service
// (Pins().RunSingleton) runs on exactly one of the servers that registered
// it, and moves when that server fails or leaves.
//
// # Stop
//
// Leave hands everything over before going: singletons move, pins are
// released, sessions move to their secondaries, the node's bindings leave
// the naming tree, and the other members see a leave rather than a
// failure. Shutdown stops at once, as a crash would; the others detect the
// failure (in a few seconds, see membership.Profile) and take over.
//
// # Layers
//
// Each part is a package usable on its own, depending only on the ones
// below it:
//
//   - membership: who is in the cluster (discovery, failure detection,
//     metadata, events, channels), on hashicorp/memberlist.
//   - naming: the cluster-wide naming tree with clusterable names and load
//     balancing.
//   - replication: replicated sessions (primary/secondary).
//   - replication/pins: pinned objects and singleton services.
//
// Every node-to-node request (session replication, naming's confirmed
// binds, remote pins) rides one transport per node, which membership owns:
// pooled, multiplexed connections, authenticated with the cluster key or
// mutual TLS (membership.Config.SecretKeys, membership.Config.TLS).
// Package troupetest starts whole clusters in one process, with faults to
// inject, for testing services built on Troupe.
//
// examples/quickstart tours all of it on three local nodes.
package troupe
