package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// Handler serves the requests that peers send to this node.
//
// ServeRequest is called concurrently, each request on a goroutine of
// its own (the transport reuses them from one request to the next).
// from is the peer's name from its handshake (its Config.Name, sent
// inside the handshake that the cluster key or certificate protects);
// method and body are what the peer passed to Call or Send. body belongs
// to the handler. The returned body is sent back to the caller; a
// returned error reaches the caller as a *RemoteError holding
// err.Error() and, if it is or wraps a *CodedError, its code. The transport reads the returned
// body after ServeRequest returns, so the handler must not modify it
// afterwards. Requests made with Send get no answer; what their handler
// returns is discarded.
type Handler interface {
	ServeRequest(ctx context.Context, from, method string, body []byte) ([]byte, error)
}

// InlineHandler is a Handler that can serve some requests without
// blocking. A request that arrives alone (nothing else is waiting to be
// read behind it) is first offered to TryServeRequest on the
// connection's reader goroutine, which saves handing it to a handler
// goroutine and back: for a small request that hand-off is a good part
// of a round trip. If TryServeRequest reports ok == false, the request
// goes to a handler goroutine and ServeRequest as usual.
//
// TryServeRequest must never block: no lock that anything holds for
// long, no channel wait, no network call; it returns ok == false
// instead. While it runs, the connection reads nothing else. When it
// returns ok == false it must not have kept or modified body.
type InlineHandler interface {
	Handler
	TryServeRequest(ctx context.Context, from, method string, body []byte) (resp []byte, ok bool, err error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, from, method string, body []byte) ([]byte, error)

// ServeRequest calls f.
func (f HandlerFunc) ServeRequest(ctx context.Context, from, method string, body []byte) ([]byte, error) {
	return f(ctx, from, method, body)
}

var (
	// ErrClosed is returned by Call and Send after Shutdown, and by calls
	// in flight when Shutdown closes their connection.
	ErrClosed = errors.New("transport: closed")

	// ErrFrameTooLarge is returned by Call and Send when the request does
	// not fit in one frame of the peer's MaxFrameSize. The request was not
	// sent. A peer that receives a larger frame closes the connection.
	ErrFrameTooLarge = errors.New("transport: frame too large")

	// ErrHandshake is returned by Call and Send when the peer refused the
	// connection or failed to prove itself: wrong cluster key, certificate
	// not signed by the cluster CA, incompatible protocol version, or
	// TLS on one side only. The request was not sent.
	ErrHandshake = errors.New("transport: handshake failed")

	// ErrPeerUnreachable is returned by Call and Send when the peer could
	// not be dialled, or when the connection broke or went silent before
	// the answer arrived. In the second case the request may or may not
	// have run on the peer.
	ErrPeerUnreachable = errors.New("transport: peer unreachable")

	// ErrWouldBlock is returned by TrySend when the request could not be
	// sent without waiting. It was not sent.
	ErrWouldBlock = errors.New("transport: would block")
)

// RemoteError is the error a peer's handler returned, as seen by Call.
type RemoteError struct {
	Addr    string // the address passed to Call
	Method  string
	Code    uint64 // the handler error's CodedError.Code; 0 if it had none
	Message string // the handler error's Error()
}

// CodedError is an error whose Code travels to the caller beside its
// message (RemoteError.Code), so that the layer above can map it back to
// a sentinel error: a string does not survive errors.Is. A handler
// returns it, or an error that wraps it.
type CodedError struct {
	Code uint64
	Err  error
}

func (e *CodedError) Error() string { return e.Err.Error() }
func (e *CodedError) Unwrap() error { return e.Err }

// An error frame's body is the code as a uvarint, then the message.
func appendRemoteError(b []byte, err error) []byte {
	var code uint64
	if ce, ok := errors.AsType[*CodedError](err); ok {
		code = ce.Code
	}
	b = binary.AppendUvarint(b, code)
	return append(b, err.Error()...)
}

func parseRemoteError(addr, method string, body []byte) *RemoteError {
	code, n := binary.Uvarint(body)
	if n <= 0 {
		return &RemoteError{Addr: addr, Method: method, Message: string(body)}
	}
	return &RemoteError{Addr: addr, Method: method, Code: code, Message: string(body[n:])}
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("transport: %s on %s: %s", e.Method, e.Addr, e.Message)
}
