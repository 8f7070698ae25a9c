// Package membership tells a Troupe node who else is in its cluster. It is
// built on hashicorp/memberlist (SWIM with Lifeguard) for gossip and
// failure detection, and adds what an application server cluster needs
// around it: discovery that keeps working after partitions, metadata,
// ordered events, and named channels for the layers above.
//
// # Starting
//
// A node starts with New. The Config names the cluster (which keeps
// clusters on one network apart), the node, its role and replication
// group, the address it binds and advertises, and how it finds its peers:
//
//	c, err := membership.New(ctx, membership.Config{
//		ClusterName: "orders",
//		NodeName:    "worker-1",
//		Role:        "worker",
//		BindAddr:    "10.0.0.5:7946",
//		WellKnown:   []string{"cluster.orders.internal:7946"},
//		Multicast:   &membership.MulticastConfig{},
//		SecretKeys:  [][]byte{key},
//	})
//	defer c.Shutdown()
//
// Well-known members are retried with backoff until one answers, so they
// may start last; a DNS name contributes every address it resolves to.
// Multicast announcements (TTL 1 by default) find peers on the local
// segment with no addresses configured at all. Both keep running after the
// node has joined: well-known members and recently failed members that are
// missing from the member list are re-joined, and announcements continue at
// a low rate, so the two halves of a healed partition merge again by
// themselves, which memberlist alone never does.
//
// # Running
//
// Members returns the live members, from a local copy. Subscribe delivers
// join, leave, fail and update events in the same order to every
// subscriber, from a goroutine of the subscription's own, so a subscriber
// may call back into the Cluster and a slow one never stalls the node.
// UpdateMeta changes what this node advertises (weight, tags).
//
// Upper layers register a Channel each. A channel has its own gossip
// broadcasts (relayed by every receiver, since memberlist transmits only
// from the sender), its own share of memberlist's periodic state exchange
// (anti-entropy: send a digest, fetch what differs), direct messages to
// one node, and calls: a request to one node and its answer. Gossip is
// best effort: repair with the state exchange.
//
// Direct messages and calls ride the node's transport, one per node:
// a listener at Config.TransportAddr, whose address travels in the
// member's metadata, and one pooled, multiplexed connection to each peer,
// authenticated and encrypted with the cluster keys or mutual TLS
// (Config.TLS). Every layer above talks to other nodes through it, so a
// node has one port for all of them. A handler sees the sender's name as
// proven in the connection's handshake. Errors a handler returns keep
// their identity at the caller when the channel lists them (WithErrors):
// a remote ErrNoQuorum is errors.Is ErrNoQuorum.
//
//	ch, err := c.Channel("orders", handler, membership.WithErrors(ErrSoldOut))
//	resp, err := ch.Call(ctx, "worker-2", "reserve", req)
//
// # Stopping
//
// Leave tells every member that the node is leaving, waits for their
// acknowledgements, and stops: the others report EventLeave. Shutdown stops
// at once, as a crash would: the others detect it and report EventFail.
// Both wait for every goroutine the Cluster started, and both are final.
//
// # Security and isolation
//
// The cluster name is memberlist's label on every packet and stream, so a
// node of another cluster cannot join or be joined, even on the same port.
// With SecretKeys, gossip and state exchange are encrypted (AES-GCM) and
// multicast announcements are authenticated (HMAC); a node without the key
// can neither join nor read; the transport's connections prove the key in
// their handshake and are sealed with fresh keys per connection. Keys
// rotate with InstallKey, UseKey and RemoveKey; the transport's next
// handshakes use the new keys. Two live nodes may not share a name: the second is refused
// with ErrNameInUse, naming the address of the first.
package membership
