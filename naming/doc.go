// Package naming is Troupe's cluster-wide naming tree: the JNDI tree of a
// WebLogic cluster. Every node binds the services it offers under names
// ("ejb/OrderService", "jms/queues/Orders"); every node holds a copy of
// the whole tree, looks names up locally, and picks one of a name's
// offers with a load-balancing policy.
//
// # Start
//
// A tree runs on a membership.Cluster, which it uses for member events and
// for one gossip channel:
//
//	cluster, err := membership.New(ctx, membership.Config{...})
//	tree, err := naming.New(cluster, naming.Options{}) // no I/O; returns at once
//	defer tree.Close()
//
// New registers the channel, subscribes to member events and asks a few
// members for their digests; the existing tree then arrives in the
// background (a Watch shows it arriving).
//
// # Run
//
// Bind, Rebind and Unbind change this node's bindings. They are applied to
// the local copy before they return, then gossiped:
//
//	tree.Bind(ctx, "ejb/OrderService", []byte("http://10.0.0.7:8080"))              // this node's
//	tree.Bind(ctx, "http/orders", url, naming.Clusterable())                          // one offer among several
//	tree.Bind(ctx, "config/db", dsn, naming.WithScope(naming.ClusterScope))           // the cluster's
//
// Lookup, List and Select read the local copy: they never block, never
// touch the network, and Lookup does not allocate. Watch delivers every
// change under a prefix, in order. Select and the replica-aware
// RoundTripper choose among a name's live offers with a Policy
// (RoundRobin, Weighted, Random, PreferLocal, Sticky, WithRole).
//
// What a binding is worth depends on its scope:
//
//   - Node scope (the default): the binding belongs to the node and is
//     removed on every node when that node leaves or fails, or closes its
//     tree. A node that restarts under the same name starts afresh: every
//     tree has an incarnation (its start time), carried by each record;
//     records of an older incarnation are dropped when a newer one is
//     seen, and records of a departed node are refused until it rejoins.
//   - Cluster scope: the binding survives any node. Concurrent writes are
//     resolved by last-writer-wins on a hybrid logical clock (see below);
//     a deleted binding leaves a tombstone, collected after
//     Options.TombstoneTTL. A node partitioned away for longer than that
//     can bring back a value deleted meanwhile.
//   - Clusterable names: several nodes bind the same name, each binding
//     being an offer; Lookup returns every live offer. Binding a name that
//     another node holds and that is not clusterable fails with
//     ErrNameBound.
//
// When two nodes bind one name at the same moment (neither had seen the
// other's binding), every node keeps the same winner: the binding with
// the lowest (first-bind timestamp, node name). The loser's binding is
// removed everywhere and its watchers get an EventConflict. For
// cluster-scoped bindings the last writer wins and the node whose write
// was replaced by a concurrent Bind gets the EventConflict.
//
// A plain Bind returns before the other nodes have heard of it, so both
// racing Binds return nil and the loser learns later. Bind with
// Confirmed() instead sends the binding to every live member and returns
// once each has answered with what it holds: exactly one of the racing
// Binds returns nil, the others ErrNameBound naming the winner, and every
// member already shows the winner. Each offer carries Claimed, the
// hybrid-logical-clock time of its first Bind; a node that claims a name
// after seeing someone else's claim gets a larger one, which makes it a
// fencing token (package replication's pins and singletons use both).
//
// # Replication
//
// One goroutine per tree (the loop) owns the state: it applies local
// operations, gossip, state exchange and member events in arrival order,
// and publishes an immutable radix tree through an atomic pointer, which
// readers load without locks. The loop's core does no I/O and is tested
// without a network.
//
//	for {
//		select {
//		case op/message/state := <-inbox: core.apply(...)
//		case ev := <-memberEvents:       core.memberEvent(ev)
//		case <-ticker:                   core.tick() // beacons, fetch deadlines, tombstone GC
//		}
//		publish() // new root, watch events, messages to send, replies
//	}
//
// Each change is gossiped once by its node (membership relays it to
// everyone); a value too large for a gossip packet is announced and
// fetched from its owner. Gossip is best effort, so three mechanisms
// repair what it loses, none of which sends the whole tree:
//
//   - Versions: each node numbers its own changes. Others keep, per owner,
//     the records and a hash of (name, version) over them. After a burst
//     of changes the owner gossips a beacon (its version and hash); a node
//     whose copy differs asks the owner for the changes since the version
//     it holds complete (a delta, or a snapshot if it is too far behind)
//     over TCP.
//   - Digests: the periodic push/pull exchange of memberlist carries a
//     digest: per owner (incarnation, version, hash), and the
//     cluster-scoped records hashed into 256 buckets. Its size grows with
//     the number of nodes, not bindings. Each side fetches what it lacks:
//     owners' records from the owners, differing buckets from the peer.
//   - Member events: a node that returns (a healed partition) is asked for
//     its records and digest at once.
//
// Malformed, foreign (another protocol version) and oversized messages
// are dropped and counted in Stats; the inbox and send queues are bounded.
//
// # Hybrid logical clock
//
// Timestamps are 48 bits of Unix milliseconds and 16 bits of counter. A
// node's clock never goes backwards and moves past every timestamp it
// receives (but not more than a minute ahead of its wall clock), so a
// write made after seeing another is ordered after it. Writes made on
// two nodes within the same millisecond without seeing each other are
// concurrent: they are ordered deterministically, not by real time.
//
// # Stop
//
// Close tells the other nodes (best effort) that this node's bindings are
// gone, stops the loop, the senders and every watcher, and waits for
// them. Closing or shutting down the Cluster also stops the tree; calls
// then return ErrClosed. Reads keep answering from the last copy.
package naming
