// Package metrics exports a Troupe node's statistics to Prometheus
// (github.com/prometheus/client_golang). It is a package of its own so
// that the rest of Troupe does not depend on Prometheus: every part of a
// node counts what it does in its Stats, with atomic counters and no
// metrics library, and this package reads those snapshots.
//
// # Start
//
// Make a Collector for a started node and register it on a registry of
// your own; this package registers nothing globally:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(metrics.New(node))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// A process that runs a proxy.Handler registers metrics.NewProxy(h) too.
//
// # Run
//
// Nothing runs in the background. Each scrape calls Collect, which takes
// one snapshot of each part's Stats (membership.Cluster.Stats,
// naming.Tree.Stats, replication.Sessions.Stats, pins.Pins.Stats) and
// sends it as constant metrics, so a scrape costs a few atomic loads and
// short lock holds, and two scrapes never disturb each other. Counters
// start at zero when the node starts. Every metric of New carries the
// label node="<node name>", so that the nodes of one process (a test, the
// quickstart) can share a registry.
//
// # Stop
//
// There is nothing to stop. After the node's Shutdown the Collector still
// reports the node's last counts; unregister it (Registry.Unregister)
// when the node is gone for good. A client node (troupe.Config.Client)
// holds no sessions and no pins and exports none of their metrics.
//
// # Metrics
//
// Membership (gauges, then counters):
//
//	troupe_members{state="alive|suspect|failed"}   members as this node sees them; failed: declared failed and not back
//	                                               (suspect stays 0: memberlist v0.7.0 does not expose suspicion;
//	                                               see membership.Cluster.Suspects and RELIABILITY.md)
//	troupe_gossip_messages_total{direction="sent|received"}   channel broadcasts carried by memberlist's gossip, each copy
//	troupe_gossip_bytes_total{direction}           their bytes
//	troupe_state_exchanges_total{direction}        shares of the periodic state exchange (push/pull)
//	troupe_state_exchange_bytes_total{direction}   their bytes
//	troupe_channel_messages_total{direction}       direct messages and calls over the node's transport
//	troupe_channel_bytes_total{direction}          their bytes, and the calls' answers in the direction they travel
//	troupe_gossip_relayed_total                    broadcasts relayed on first receipt
//	troupe_gossip_duplicates_total                 broadcasts heard again, not relayed
//	troupe_membership_dropped_total{reason="malformed|unknown_channel|queue_full|bad_meta|state_too_large"}
//	troupe_membership_name_conflicts_total         nodes that tried to join with a live member's name
//	troupe_membership_join_attempts_total          discovery join attempts
//	troupe_membership_join_failures_total          discovery join attempts that reached nobody
//	troupe_multicast_sent_total                    multicast announcements sent
//	troupe_multicast_send_errors_total             announcements that could not be sent
//	troupe_multicast_received_total{outcome="accepted|partitioned|malformed|foreign|forged|self|stale|replayed"}
//
// The naming tree:
//
//	troupe_naming_bindings                         names bound in this node's copy
//	troupe_naming_records                          records held: offers, cluster-scoped bindings, tombstones
//	troupe_naming_bytes                            bytes of the records' names and values
//	troupe_naming_conflicts_total                  bindings of this node that lost a concurrent bind
//	troupe_naming_dropped_total{reason="malformed|foreign|oversized|stale|queue_full|rejected|over_quota"}
//	troupe_naming_broadcasts_total                 naming gossip messages sent
//	troupe_naming_fetches_total                    anti-entropy fetches requested
//	troupe_naming_fetches_served_total             anti-entropy fetches answered
//	troupe_naming_send_errors_total                naming messages that could not be sent
//	troupe_naming_message_bytes_total{direction}   bytes of naming messages
//
// Sessions:
//
//	troupe_sessions{role="primary|secondary"}      sessions served here, and copies kept for other primaries
//	troupe_sessions_created_total                  sessions created here
//	troupe_session_saves_total                     Saves that changed something
//	troupe_session_full_copies_total               full copies sent to a secondary (new secondary, gap, repair)
//	troupe_session_save_duration_seconds           histogram of Save calls, 100 µs to 3.3 s, doubling
//	troupe_session_failovers_total{kind="promotion|takeover|rehome"}
//	troupe_sessions_expired_total                  copies removed for idleness, either role
//	troupe_sessions_invalidated_total              sessions invalidated
//	troupe_session_stale_drops_total               copies dropped because another node held a newer one
//	troupe_session_refused_total                   peers' session requests refused
//
// Pins and singletons:
//
//	troupe_pins_held                               pins this node claimed and has not released
//	troupe_pin_claims_total                        pin claims this node won
//	troupe_pin_releases_total                      pins given up: Release, Leave, a lost quorum
//	troupe_singletons_running                      singleton functions running here now
//	troupe_singleton_starts_total                  singleton functions started here (moved here, restarted)
//	troupe_singleton_stops_total                   singleton functions stopped here (moved away, stopped, returned)
//
// The proxy (NewProxy; no node label):
//
//	troupe_proxy_requests_total{outcome="served|retried|unavailable|failed|canceled"}
//	troupe_proxy_attempts_total                    requests sent to a node, first tries and retries
//	troupe_proxy_nodes_marked_down_total           times a node was marked down
//	troupe_proxy_passed_503_total                  503 answers a request went past to another node
//
// A failover shows on two nodes: the one that takes over counts a
// promotion, takeover or rehome and a singleton start; the one that left
// or failed, if it is still running, a singleton stop. Watch the
// *_dropped_total counters, troupe_membership_name_conflicts_total and
// troupe_session_refused_total: in a healthy cluster they stay flat,
// except stale naming messages, which are normal repair work.
package metrics
