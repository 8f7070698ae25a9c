// Package troupe lets Go application servers form a cluster that looks
// like one server to its clients, in the manner of WebLogic or the WSO2
// ESB: servers find each other by IP multicast or by well-known members,
// share a replicated naming tree, replicate session state from a primary
// to a secondary, and pin stateful objects and singleton services to one
// server at a time.
//
// Troupe is layered; each layer is usable on its own and depends only on
// the ones below it:
//
//   - membership: who is in the cluster (discovery, failure detection,
//     metadata, events, channels), on hashicorp/memberlist.
//   - naming: the cluster-wide naming tree with clusterable names and load
//     balancing.
//   - replication: replicated sessions (primary/secondary) and pinned
//     objects and singletons.
//
// Start with examples/quickstart, then the membership package.
package troupe
