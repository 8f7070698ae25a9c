// Package pins places objects that cannot be replicated, and services
// that must run once, on one node of the cluster at a time: WebLogic's
// pinned objects and migratable services. It works on a membership
// Cluster and its naming Tree, and owns nothing else.
//
// # Start
//
// New starts pinning on a cluster and its naming tree (which must run on
// the same cluster); Leave releases this node's pins and hands its
// singletons over, Shutdown stops at once, as a crash would.
//
//	p, err := pins.New(ctx, cluster, tree, pins.Options{})
//	defer p.Shutdown()
//
// # Pins
//
// Pin claims a key for this node (or, with On, for a node chosen by a
// naming Policy among a service's offers) unless it has an owner already,
// and returns the owner; Owner reads it from the local copy of the tree;
// Handler forwards HTTP requests for a key to its owner; Watch reports
// pins acquired, released and lost.
//
//	pin, err := p.Pin(ctx, "cart/42")          // pin.Owner, pin.Token
//	http.Handle("/carts/", p.Handler(cartKey, carts))
//
// A pin is a node-scoped naming binding, Prefix/key, made with
// naming.Confirmed: the binding goes to every live member, which answers
// with what it holds, so when nodes pin one key at once every Pin returns
// the same owner. It goes when the owner releases it, leaves or fails, and
// every watcher then gets Lost naming the owner; the next Pin places the
// key anew. A pin's Token is the binding's Claimed time, which grows from
// owner to owner (each claims after seeing the previous claim), so a
// store written by pinned objects can refuse an older owner.
//
// Handler forwards only to the live member that owns the key, at the HTTP
// address it publishes on its own IP, or over https to any host whose
// certificate verifies when Options.ForwardTLS is set (mutual TLS when it
// carries a certificate). A forwarded request carries X-Forwarded-For and
// Forwarded naming the client (appended to a trusted proxy's, see
// Options.TrustedProxies) and the hop header ForwardedHeader, signed with
// a key derived from the cluster key; a client's own hop header is
// removed, never believed. Dial, response-header and body timeouts bound
// every forward (Options.Forward*).
//
// A pin placed with On is claimed by the chosen node itself, which this
// node asks over the cluster's transport; its errors keep their identity
// (errors.Is(err, ErrNoQuorum) holds for a remote node's refusal too).
//
// # Singletons
//
// RunSingleton registers this node for a singleton service; one of the
// registered nodes runs it, with the pin Prefix/singletons/name and its
// token. When that node fails or leaves (or Stops), another claims the pin
// and runs the service; a node that leaves stops its instance before
// releasing the pin, so two instances never overlap on a graceful move.
// PreferRole and PreferNode choose who claims first.
//
// # Partitions
//
// A node takes a pin or starts a singleton only while it holds the
// quorum (the rule of internal/quorum, shared with sessions): it sees a
// strict majority of the members alive or failed within QuorumWindow, or
// exactly half of them including the one whose name sorts first, the
// tie-breaker of an even split. A node that loses the quorum releases
// its pins and stops its singletons.
//
// The minority side learns of its failures later than the majority
// learns of its own, so counting is not enough: an owner holds its pins
// and singletons only while it reaches a quorum of the members, which it
// checks every OwnerLease/4, and gives them up once OwnerLease passes
// without; and no node claims within OwnerLease of a member failure it
// saw. A cut-off owner has then let go before the majority claims, and
// its tombstones travel with its records at the heal, so its earlier
// claim cannot come back and win. A claim during which a member failed
// (its confirmation may have settled on one side's answers) is withdrawn
// and made again after OwnerLease. So on the minority side of a partition
// nothing is pinned and nothing runs, while the majority side re-pins
// what the minority held once failure detection declares it failed (with
// larger tokens); after the heal the minority's members find the
// majority's pins. Between the cut and the end of the owner lease both
// sides may run a singleton: that is what the token is for. When the
// sides are even, only the side with the tie-breaker keeps and takes
// pins. A process paused past its lease (SIGSTOP, a frozen VM) gives up
// what it held as soon as it runs again; until then its own copy of the
// tree may still show it as the owner.
package pins
