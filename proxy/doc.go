// Package proxy is Troupe's session-aware load balancer: an http.Handler
// that does for a Troupe cluster what WebLogic's proxy plug-in or the
// WSO2 load balancer does for theirs.
//
// The balancer knows the cluster as a client: a node started with
// troupe.Config{Client: true} runs membership and the naming tree, and
// holds no sessions, takes no pins and counts toward no quorum. The
// application servers bind their URL under a service name
// (troupe.Config.Services, "services/web"), and the handler sends each
// request to one of that name's live offers:
//
//	node, err := troupe.Start(ctx, troupe.Config{Client: true, Membership: mcfg})
//	h, err := proxy.New(proxy.Config{
//		Names:  node.Names(),
//		Routes: []proxy.Route{{Prefix: "/console", Service: "troupe/console"}},
//	})
//	srv := &http.Server{Addr: ":8080", Handler: h}
//
// A request without a session goes to the node the Policy picks (round
// robin by default). A request whose session cookie names a route goes
// to the session's primary, so that the session is served where it
// lives; if the primary refuses the connection or times out, to its
// secondary, which holds a copy and takes over without a transfer; then
// to any node, which takes the session over from whoever holds it.
//
// A node that refuses a connection, or does not answer within
// HeaderTimeout, is marked down for DownFor: the handler sends it nothing
// while another node can serve. A request that never reached a node is
// always sent on to the next; one that may have reached it (a reset, a
// timeout) only if it is idempotent: GET, PUT, DELETE..., or a request
// with an Idempotency-Key header, which the application must honor. Its
// body is kept for that, up to MaxBodyBuffer. Such a request also goes
// on when a node answers 503 Service Unavailable (a session that is
// moving, a node that is leaving) while another node offers the service. When no node can take a
// request the handler answers 503 with a Retry-After, and 502 when the
// nodes it tried failed.
//
// The handler sets X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto
// and Forwarded (RFC 7239), and keeps the client's Host. Stats counts
// requests by outcome; package metrics exports them.
package proxy
