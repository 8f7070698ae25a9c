// Package multicast discovers the nodes of a cluster by IP multicast, the
// way WebLogic clusters find their members: every node announces its
// cluster name, node name and memberlist address on a UDP multicast group,
// and reports the nodes of its cluster that it hears to the membership
// layer, which joins them through memberlist. This package only finds
// peers; it never decides who is a member.
//
// # Lifecycle
//
// Start validates the Config (applying defaults to a copy), opens two
// sockets and starts three goroutines:
//
//	d, err := multicast.Start(ctx, multicast.Config{
//		ClusterName: "orders", NodeName: "node-1",
//		Advertise: func() string { return "10.0.0.5:7946" },
//		Keys:      keyring.Keys, // primary first; nil for none
//		Joined:    func() bool { return members() > 1 },
//		Known:     isAliveMember,
//		OnPeer:    func(node, addr string) { go join(addr) },
//	})
//	...
//	d.Close()
//
// The announcing goroutine sends one announcement at once, then one every
// Interval (DefaultInterval) while Joined reports false, and every
// SlowInterval (DefaultSlowInterval) once it reports true: a cluster
// forms fast, and announcements go on at a low rate so that the two
// halves of a healed partition hear each other again. AnnounceNow brings
// the next announcement forward.
//
// The receiving goroutine reads every datagram of the group and drops, and
// counts in Stats, what must not be reported: datagrams cut off by a
// faultnet partition, oversized or undecodable ones, other clusters',
// forged ones (a tag that no key verifies, or a missing or unexpected one),
// its own, ones whose timestamp is more than MaxSkew off, replays (a
// timestamp not newer than the last one of that node), and nodes that
// Known says are members already. What is left is queued for the
// delivering goroutine, at most once per Interval per node, which calls
// OnPeer. The queue is bounded and the receiver never waits for it, so a
// slow OnPeer or a flood of announcements cannot stop the reading of
// datagrams or grow memory; the replay table is bounded by MaxSenders
// names as well.
//
// Close, or the cancellation of ctx, closes the sockets and stops the
// goroutines; Close waits for them (and for a running OnPeer) to return.
//
// # Security
//
// With cluster keys, announcements carry an HMAC-SHA256 tag, so only
// holders of a key can make a node report a peer, and the timestamp and
// replay checks stop the re-sending of captured announcements. Without
// keys, anyone on the network segment can make a node try to join an
// address of their choosing; memberlist, with its label and keyring,
// still decides who becomes a member. Announcements are authenticated, not
// encrypted: the cluster name, node names and addresses can be read by
// anyone who can read the group.
//
// The wire format is described in wire.go.
package multicast
