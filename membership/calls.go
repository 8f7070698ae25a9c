package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/troupe-go/troupe/internal/transport"
)

// Every node runs one transport (internal/transport): a listener at
// Config.TransportAddr and pooled, multiplexed, authenticated connections
// to its peers. All node-to-node requests of every layer ride it, routed
// by channel: a direct message (Channel.Send) travels as method "<channel>",
// a call (Channel.Call) as "<channel>/<method>". The transport's address
// travels in member metadata, so a member is reached by name.

// CallHandler is a channel Handler that also answers calls.
type CallHandler interface {
	Handler
	// HandleCall serves one Channel.Call from member from. method and req
	// are what the caller passed; req is the handler's to keep. Calls are
	// served concurrently, each on a goroutine of its own; ctx ends when
	// the caller's connection closes or the cluster shuts down. The
	// returned body goes back to the caller; a returned error reaches the
	// caller as a *RemoteError, which matches with errors.Is the first of
	// the channel's errors (WithErrors) that the returned error matches.
	HandleCall(ctx context.Context, from, method string, req []byte) ([]byte, error)
}

// InlineCallHandler is a CallHandler that can serve some calls without
// blocking. A call that arrives alone on its connection is first offered
// to TryHandleCall on the goroutine that read it, which saves a hand-off
// between goroutines (for a small call, a good part of a round trip on a
// LAN). TryHandleCall must never block, not even on a lock that anything
// holds across I/O: it reports ok == false instead, and the call goes to
// HandleCall as usual.
type InlineCallHandler interface {
	CallHandler
	TryHandleCall(ctx context.Context, from, method string, req []byte) (resp []byte, ok bool, err error)
}

// ChannelOption configures a channel at registration.
type ChannelOption func(*Channel)

// WithErrors lists the sentinel errors that keep their identity across a
// call: when a channel's HandleCall returns an error that matches one of
// them (errors.Is), the caller's error matches it too. The list is part
// of the channel's protocol: every node must register the same list, and
// it may only grow at the end.
func WithErrors(errs ...error) ChannelOption {
	return func(ch *Channel) { ch.errs = append(ch.errs, errs...) }
}

// RemoteError is what Channel.Call returns when the called member's
// handler returned an error. It matches the channel's sentinel error
// that the handler's error matched (see WithErrors) with errors.Is.
type RemoteError struct {
	Node    string // the called member
	Channel string
	Method  string
	Message string // the handler error's text
	err     error  // the sentinel, or nil
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("membership: %s/%s on %s: %s", e.Channel, e.Method, e.Node, e.Message)
}

// Unwrap returns the channel's sentinel error that the remote error
// matched, or nil.
func (e *RemoteError) Unwrap() error { return e.err }

// Call sends req to member node on this channel and waits for its
// handler's answer (the handler must be a CallHandler). The call gives up
// when ctx ends. Errors: ErrUnknownMember when node is not a live member
// that runs a transport; ErrUnreachable when it could not be reached or
// the connection broke before the answer came (the call may or may not
// have run there); ErrMessageTooLarge when req exceeds the peer's
// MaxMessageSize; a *RemoteError when the handler returned an error;
// ErrShutdown after Shutdown; the context's error.
func (ch *Channel) Call(ctx context.Context, node, method string, req []byte) ([]byte, error) {
	c := ch.cluster
	addr, err := c.transportAddrOf(node)
	if err != nil {
		return nil, err
	}
	resp, err := c.calls.Call(ctx, addr, ch.wireMethod(method), req)
	c.stats.countCall(len(req), len(resp), err)
	if err != nil {
		return nil, ch.callError(node, method, err)
	}
	return resp, nil
}

// Send delivers msg to member node's HandleMessage on this channel. It
// returns once the message is queued on the connection to node; it does
// not wait for the handler. It returns the errors of Call, except
// RemoteError.
func (ch *Channel) Send(ctx context.Context, node string, msg []byte) error {
	c := ch.cluster
	if err := ctx.Err(); err != nil {
		return err
	}
	addr, err := c.transportAddrOf(node)
	if err != nil {
		return err
	}
	if err := c.calls.Send(ctx, addr, ch.name, msg); err != nil {
		return ch.callError(node, "", err)
	}
	c.stats.channelOut.add(len(msg))
	return nil
}

// TrySend is Send that never waits: when it would have to (no connection
// to node is open yet, or its queue is full) it sends nothing and returns
// ErrWouldBlock, and the caller may Send from a goroutine that can wait.
// It is for goroutines that own state and must not block, such as an
// event loop answering a peer.
func (ch *Channel) TrySend(node string, msg []byte) error {
	c := ch.cluster
	addr, err := c.transportAddrOf(node)
	if err != nil {
		return err
	}
	err = c.calls.TrySend(addr, ch.name, msg)
	switch {
	case err == nil:
		c.stats.channelOut.add(len(msg))
		return nil
	case errors.Is(err, transport.ErrWouldBlock):
		return ErrWouldBlock
	}
	return ch.callError(node, "", err)
}

// wireMethod returns "<channel>/<method>", built once per method.
func (ch *Channel) wireMethod(method string) string {
	ch.methods.RLock()
	m, ok := ch.methods.m[method]
	ch.methods.RUnlock()
	if ok {
		return m
	}
	m = ch.name + "/" + method
	ch.methods.Lock()
	if len(ch.methods.m) < maxCachedMethods {
		ch.methods.m[method] = m
	}
	ch.methods.Unlock()
	return m
}

// maxCachedMethods bounds the method names a channel remembers: a protocol
// has a handful; a caller that invents names pays a concatenation each.
const maxCachedMethods = 64

// callError maps the transport's errors onto this package's.
func (ch *Channel) callError(node, method string, err error) error {
	if rerr, ok := errors.AsType[*transport.RemoteError](err); ok {
		e := &RemoteError{Node: node, Channel: ch.name, Method: method, Message: rerr.Message}
		if rerr.Code > 0 && rerr.Code <= uint64(len(ch.errs)) {
			e.err = ch.errs[rerr.Code-1]
		}
		return e
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, transport.ErrClosed):
		return ErrShutdown
	case errors.Is(err, transport.ErrFrameTooLarge):
		return fmt.Errorf("%w: %s to %s: %w", ErrMessageTooLarge, ch.name, node, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, node, err)
}

// codeOf wraps a handler's error with the code of the channel's sentinel
// it matches, so that the caller can map it back.
func (ch *Channel) codeOf(err error) error {
	if err == nil {
		return nil
	}
	for i, s := range ch.errs {
		if errors.Is(err, s) {
			return &transport.CodedError{Code: uint64(i + 1), Err: err}
		}
	}
	return err
}

// TransportAddr returns the address of this node's transport, as
// published to its peers.
func (c *Cluster) TransportAddr() string { return c.callAddr }

// MaxMessageSize returns the largest call, answer or direct message this
// node's transport accepts (Config.MaxMessageSize, default applied).
func (c *Cluster) MaxMessageSize() int { return c.cfg.MaxMessageSize }

// transportAddrOf returns the transport address of a live member.
func (c *Cluster) transportAddrOf(node string) (string, error) {
	c.mu.RLock()
	m, ok := c.mu.members[node]
	state := c.mu.state
	c.mu.RUnlock()
	switch {
	case state >= ClusterLeft:
		return "", ErrShutdown
	case !ok || m.TransportAddr == "":
		return "", fmt.Errorf("%w: %q", ErrUnknownMember, node)
	}
	return m.TransportAddr, nil
}

// startTransport starts this node's transport, before memberlist, so that
// its address is in the node's first metadata.
func (c *Cluster) startTransport(ctx context.Context) error {
	r := c.cfg
	bind := r.TransportAddr
	if bind == "" {
		bind = net.JoinHostPort(r.advertise.Addr().String(), "0")
	}
	tcfg := transport.Config{
		Name:          c.name,
		BindAddr:      bind,
		MaxFrameSize:  r.MaxMessageSize + callOverhead,
		MaxConns:      r.MaxConnections,
		MaxConnsPerIP: r.MaxConnectionsPerIP,
		TLS:           r.TLS,
		Logger:        c.log.With("component", "transport"),
		Faults:        r.Faults,
	}
	if r.TLS == nil && len(r.SecretKeys) > 0 {
		tcfg.Keys = r.SecretKeys
		tcfg.KeySource = c.Keys // rotations reach the next handshake
	}
	t, err := transport.New(ctx, tcfg, router{c})
	if err != nil {
		return fmt.Errorf("membership: start transport: %w", err)
	}
	c.calls = t
	ap, err := netip.ParseAddrPort(t.Addr())
	if err != nil {
		_ = t.Shutdown()
		return fmt.Errorf("membership: transport address %q: %w", t.Addr(), err)
	}
	if ap.Addr().IsUnspecified() {
		ap = netip.AddrPortFrom(r.advertise.Addr(), ap.Port())
	}
	c.callAddr = ap.String()
	return nil
}

// callOverhead is room in a transport frame for its header and method
// name around a message of MaxMessageSize.
const callOverhead = 1 << 10

// router serves the transport's requests: it finds the channel by the
// method's first part and hands the request to the channel's handler.
type router struct{ c *Cluster }

var _ transport.InlineHandler = router{}

func (r router) ServeRequest(ctx context.Context, from, method string, body []byte) ([]byte, error) {
	r.c.stats.channelIn.add(len(body)) // TryServeRequest counts only what it serves
	name, op, call := strings.Cut(method, "/")
	if !call {
		r.c.deliver(name, from, body)
		return nil, nil
	}
	ch := r.c.channel(name)
	if ch == nil {
		r.c.stats.unknownChannel.Add(1)
		return nil, fmt.Errorf("membership: no channel for %q on %s", method, r.c.name)
	}
	h, ok := ch.handler.(CallHandler)
	if !ok {
		return nil, fmt.Errorf("membership: channel %q on %s takes no calls", ch.name, r.c.name)
	}
	resp, err := h.HandleCall(ctx, from, op, body)
	r.c.stats.channelOut.bytes.Add(uint64(len(resp)))
	return resp, ch.codeOf(err)
}

// TryServeRequest serves direct messages at once: HandleMessage must
// return quickly by its contract (it was called from memberlist's network
// goroutines before the transport carried direct messages), so it costs
// no hand-off to a handler goroutine. Calls are served here only by an
// InlineCallHandler that accepts them.
func (r router) TryServeRequest(ctx context.Context, from, method string, body []byte) ([]byte, bool, error) {
	name, op, call := strings.Cut(method, "/")
	if !call {
		r.c.stats.channelIn.add(len(body))
		r.c.deliver(name, from, body)
		return nil, true, nil
	}
	ch := r.c.channel(name)
	if ch == nil {
		return nil, false, nil // ServeRequest counts and answers it
	}
	h, ok := ch.handler.(InlineCallHandler)
	if !ok {
		return nil, false, nil
	}
	resp, ok, err := h.TryHandleCall(ctx, from, op, body)
	if ok {
		r.c.stats.channelIn.add(len(body))
		r.c.stats.channelOut.bytes.Add(uint64(len(resp)))
	}
	return resp, ok, ch.codeOf(err)
}
