// Package transport carries requests and their answers between Troupe
// nodes over persistent, multiplexed connections. Each node runs one,
// owned by its membership.Cluster, which routes requests to the layers'
// channels by method name; every layer's node-to-node requests ride it
// rather than memberlist's SendReliable, which opens a TCP connection per
// message. memberlist keeps gossip and failure detection.
//
// # Start
//
// New listens on Config.BindAddr and starts serving. Addr reports the
// address actually bound (port 0 picks a free port); it is the address
// that travels in member metadata and that peers pass to Call.
//
//	t, err := transport.New(ctx, transport.Config{
//		BindAddr: "10.0.0.5:0",
//		Keys:     [][]byte{clusterKey},
//	}, handler)
//	if err != nil {
//		return err
//	}
//	defer t.Shutdown()
//
// # Call
//
// Call sends a request (a method name and an opaque body, which callers
// encode with msgpack) to a peer and waits for its answer. The first call
// to an address dials it; later calls reuse that one connection, many at a
// time, each tagged with a request id so that answers may come back in any
// order. A call gives up when its context ends; an answer that arrives
// later is discarded. When a connection breaks, every call in flight on it
// fails at once with ErrPeerUnreachable and the next call dials again. A
// connection that goes silent while calls wait on it is pinged, and
// declared broken if the peer does not answer within Config.DialTimeout;
// one that carries no call for Config.IdleTimeout is closed.
// Send is the one-way form: it returns once the request is written or
// queued (after dialling, like Call, if there is no connection yet) and
// no answer comes back.
//
//	resp, err := t.Call(ctx, peerAddr, "session.save", body)
//	var rerr *transport.RemoteError
//	switch {
//	case errors.As(err, &rerr):
//		// the peer's handler returned an error
//	case errors.Is(err, transport.ErrPeerUnreachable):
//		// try the secondary; the request may or may not have run
//	}
//
// # Serve
//
// Each accepted connection serves its requests with the Handler given to
// New: on handler goroutines, concurrently, up to
// Config.MaxConcurrentRequests at a time per connection; beyond that the
// connection stops reading, which pushes back on the caller through TCP.
// Not every request gets a handler goroutine: one that arrives alone may
// be served inline, on the connection's reader goroutine, by an
// InlineHandler (below). A handler's context ends when its connection
// closes or the transport shuts down.
//
// An accepted connection has a reader goroutine, which serves a request
// itself when the request arrived alone and the Handler is an
// InlineHandler that can serve it without blocking; otherwise it hands
// the request to one of the handler goroutines it started, up to
// MaxConcurrentRequests, which it reuses for later requests. A dialled
// connection has no reader goroutine: a call waiting for its answer
// reads the connection itself while nobody else does, passes on the
// answers of other calls, and leaves the reading to the next waiting
// call when its own answer comes or its context ends (a frame half read
// is finished by the next reader). So a lone call costs no hand-off from
// goroutine to goroutine on either side, which for small requests is a
// good part of a round trip on loopback. Between calls nobody reads a
// dialled connection: a call that finds it unread for a while first
// looks whether the peer closed it, and dials again if so, and the
// janitor looks at idle connections on every tick (on Unix; elsewhere
// the look sees nothing, and the next call fails instead).
//
// Writes: a caller or handler whose frame finds the connection's write
// side idle writes it itself, with one non-blocking system call (on
// Unix); otherwise (and always with TLS) it queues the frame, and the
// writer goroutine drains the queue into a buffer and flushes only when
// the queue is empty, so that under load many small frames share one
// system call. Only the writer goroutine ever blocks on a full socket:
// callers leave when their context ends.
//
// # Security
//
// Every connection starts with a handshake that agrees on the protocol
// version and the largest frame each side accepts. With Config.TLS the
// connection is mutual TLS: both sides present certificates that the other
// verifies. With only Config.Keys both sides prove that they hold a
// cluster key without revealing it, derive fresh session keys, and seal
// every frame with AES-GCM. With neither, traffic is plaintext. A peer
// that fails the handshake is refused and logged, and the dialer gets
// ErrHandshake. Each hello carries the sender's Config.Name, which the
// peer's handlers see as the sender of its requests; with keys or TLS the
// name is covered by the handshake. An error that a handler returns
// travels as its text and, for a CodedError, its code, from which the
// layer above restores the sentinel error (errors.Is).
//
// Keys rotate without a restart: with Config.KeySource every handshake
// reads the current keys, and KeysChanged, called after a change, moves
// this node's own connections to the new primary key and closes every
// connection, in either direction, made with a key no longer held, so a
// removed key carries nothing from then on.
//
// # Bounds
//
// What peers can make this node hold is bounded, before they prove a
// key and after: Config.MaxConns incoming connections in all and
// Config.MaxConnsPerIP from one address, handshakes included (beyond
// them a connection is closed at accept and counted in
// Stats.RefusedConns); a handshake within Config.DialTimeout; and a
// frame's buffer grows as its bytes arrive, up to the length it claims
// and at most Config.MaxFrameSize, so a claim alone costs 16 KiB.
//
// # Shut down
//
// Shutdown closes the listener and every connection, fails the calls in
// flight with ErrClosed, and returns once every goroutine of the transport,
// handlers included, has returned. Calls after Shutdown return ErrClosed.
package transport
