// Package replication keeps stateful objects alive across node failures:
// replicated sessions, as WebLogic keeps HTTP sessions and stateful
// session beans, each with a primary copy on one node and a secondary
// copy on another; and pinned objects and singleton services, which live
// on exactly one node at a time and move when it fails.
//
// # Start
//
// NewSessions starts this node's share of the store on a
// *membership.Cluster. It registers the sessions channel on the cluster's
// transport (persistent, multiplexed node-to-node connections; mutual TLS
// with membership.Config.TLS, otherwise authenticated and encrypted with
// the cluster keys), marks the member as holding sessions with the tag
// TagKey, and subscribes to member events. It refuses a cluster without
// keys (membership.Config.SecretKeys; make one with
// `head -c 32 /dev/urandom | base64`) unless Options.Insecure says so. Every node that holds sessions
// does the same; a member without the tag (a load balancer) is never a
// secondary. WaitPeers returns once this node sees enough peers to place
// secondaries on.
//
//	sessions, err := replication.NewSessions(ctx, cluster, replication.Options{})
//	if err != nil {
//		return err
//	}
//	defer sessions.Shutdown()
//	err = sessions.WaitPeers(ctx, 1) // a secondary can be placed
//
// # Run
//
// A request creates a session, or gets it by the id its client sent, sets
// and reads attributes on the handle, and saves it. Save sends only the
// attributes that changed, with the session's next version; in ModeSync
// (the default) it returns once the secondary has applied them.
//
//	s, err := sessions.Create(ctx)                  // this node is the primary
//	s.Set("user", []byte("ana"))
//	err = sessions.Save(ctx, s)                     // the secondary has it now
//	cookie := s.ID()                                // "<key>!<primary>!<secondary>"
//	...
//	s, err = sessions.Get(ctx, cookie)              // on any node
//	user, _ := s.Get("user")
//
// Sessions.Middleware does this for net/http: cookie in, session in the
// request context (FromRequest), saved when the handler is done and
// before the response leaves, cookie rewritten when the route changes.
// A request creates a session only if its handler stores something in
// it; RenewID gives the session a new id at login, Destroy ends it at
// logout, and Commit saves it before the response is written, so that
// the response can name a session the request created.
//
// The id carries the route, as WebLogic's session cookie does, so a load
// balancer with no state can send a request to the primary and, if it is
// gone, to the secondary. Node ids in routes are NodeID(name): stable
// across restarts of a node with the same name.
//
// # Placement
//
// The secondary is another node outside the primary's replication group
// (membership.Config.Group) when there is one, otherwise any other node;
// among the candidates, the one holding the fewest secondary copies (as
// each reports in its replies), ties spread by a hash of the session key.
// A node alone has no secondary to give: the route says "none", and the
// janitor adds a secondary when a node joins.
//
// # Versions and gaps
//
// Every Save that changes something gives the session its next version
// and sends the secondary the changed attributes with the version they
// apply to. The secondary applies them only on top of exactly that
// version; a repeat is acknowledged and ignored; a gap (it missed a
// change, or lost its copy in a restart) is answered with a request for a
// full copy, which the primary sends within the same Save. A version
// that was sent is never reused, even if its Save failed (the secondary
// may have applied it), so a repeat is always the same change. In
// ModeSync, concurrent Saves of sessions that share a secondary share
// requests (group commit): a Save that finds none in flight sends at
// once, the others go together in the next one. In ModeAsync, changes
// wait in a bounded queue per secondary and travel in batches.
//
// # Epochs, leases and stale copies
//
// Each copy has an epoch, bumped whenever the session's route changes
// (a new primary or a new secondary). Two copies of one session compare
// by rank: higher epoch first; then the copy whose owner saw more live
// session nodes when it took the epoch; then the smaller primary name. A
// secondary refuses changes and full copies from a lower-ranked copy,
// answering "stale", and the sender drops its copy: an old primary never
// overwrites a newer copy.
//
// To make sure an old primary also never serves an outdated copy, a
// primary serves only under a lease from the session's secondary: every
// answer the secondary gives extends it to LeaseTerm after the request
// was sent (less a tenth for clock rate differences), and carries the
// secondary's lease generation for that primary. A secondary takes over a
// primary's session only after the last lease it granted that primary has
// run out, and it bumps the generation first. A primary whose lease ran
// out, or that sees a new generation, asks the secondary about the
// session before serving it; the secondary answers that it took the
// session over, and the primary drops its copy and fetches the current
// one like any other node. So a primary that was paused, or cut off, and
// comes back stops serving before anyone else starts, and after its
// return it serves only what the secondary confirms.
//
// The rule for a node that was declared failed and comes back is
// therefore: it keeps its copies, but serves one only after the
// secondary confirms it, under the lease, at the same epoch; one that
// lost is dropped at the first request, at the first Save (the secondary
// answers "stale"), or by the janitor when the peer that holds the newer
// copy resolves the copies it marked contested with the returning node
// (copies whose route changed because a peer failed remember that peer,
// and the two compare ranks once it is back). Secondary copies confirm
// with their primary from time to time and drop themselves when the
// primary has moved on, so that no outdated copy can be promoted later.
//
// # Failover
//
// When membership declares a primary failed (or it leaves, or the tag
// TagKey disappears from its member), its secondary promotes its copy at
// the next epoch and gives it a new secondary; when a secondary fails,
// the primary gives the session a new secondary. A Get on a node that
// holds no copy asks the route's primary to hand the session over (or,
// if the primary is gone, the secondary): that node becomes the primary
// at the next epoch and the old holder keeps a secondary copy in the new
// lineage until the new primary confirms or drops it, so there is one
// primary at a time and an answer lost on the way loses nothing. A Get on
// the secondary whose primary does not answer promotes the secondary's
// copy at once, without waiting for failure detection, if the primary's
// transport refuses connections (the process is gone) or answers that
// its sessions are shut down; a primary that is merely unreachable may be
// serving on the other side of a cut, so then the Get waits for
// membership to decide.
//
// A node takes over the sessions of failed peers, and acknowledges a
// Save in ModeSync, only while it holds the quorum (internal/quorum): it
// sees a strict majority of the session nodes alive or failed within the
// last QuorumWindow, or exactly half of them including the one whose name
// sorts first, the tie-breaker that decides an even split alike on both
// sides. One node's failure detector is not enough, though: after a
// heal the members' views differ for a while, and a node that still sees
// a peer failed while the others see it back would start a second
// lineage of the peer's sessions. So before it promotes a failed
// primary's session, or replaces a failed secondary, a node asks the
// live session nodes whether they too see that peer down, and goes on
// only when a quorum does (a peer whose port refused the connection is
// dead, and needs no agreement). A node that takes a session over from
// its live primary makes the session's secondary its own, or, when that
// secondary cannot be reached and is not known to be down, takes nothing
// over: a drop sent to it later could be lost in a cut, and it would
// promote its copy on seeing the old primary fail. It commits a takeover
// only once a new secondary accepted a copy (or no other node is alive).
// So in a partition only one side acts: the
// other takes nothing over, acknowledges no Save (ErrUnavailable), and
// stops serving the sessions whose secondaries are across the cut, while
// the acting side promotes them; after the heal its copies win. A Save in
// ModeSync is acknowledged only once a secondary holds the change: when
// no node can take a copy it fails with ErrUnavailable, unless
// Options.PrimaryOnlyWrites accepts the primary's copy alone (a node that
// saw no other within QuorumWindow, a cluster of one, acknowledges
// anyway). Changes acknowledged before a single node fails are never lost
// (ModeSync), and a client always reads its last acknowledged write.
//
// # Expiry and invalidation
//
// A session neither read nor saved for Options.IdleTimeout is dropped by
// the janitor on its primary; the primary tells the secondary which
// sessions were used, and the secondary drops its copy on its own clock,
// a little later. Invalidate removes every copy and remembers the key
// long enough that no leftover copy can come back.
//
// # Trust and bounds
//
// A peer's request is served only for a live member that holds sessions,
// and its sender is the node name its connection proved in the
// transport's handshake, never a field of the request (a request whose
// From names another node is refused; the one exception is a take that
// a session's secondary relays to its primary for the node that asked
// it). So a process that is not a member cannot read or write a session,
// and a member cannot act for another: it cannot extend a failed node's
// lease, nor write a copy in its name. Refused requests are counted in
// Stats.Refused. What remote input can grow is bounded: the table of
// peers holds only names membership reported, a copy or change beyond
// MaxSessionSize is refused on receive, and this node creates at most
// MaxSessions sessions (the middleware answers 503 beyond it). Logs name
// a session by a short hash of its key, at Debug, and never carry a
// session key, id, cookie or cluster key.
//
// # Pins and singletons
//
// Objects that are not replicated, and services that must run once, live
// on one node at a time: see the sub-package replication/pins.
//
// # Stop
//
// Shutdown stops at once, as a crash would: peers fail over when
// membership reports the node failed. Leave first removes the tag TagKey
// from the node's member, so that peers promote and re-home its sessions
// at once, then shuts down. Neither stops the Cluster.
package replication
