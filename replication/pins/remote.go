package pins

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/troupe-go/troupe/internal/wire"
	"github.com/troupe-go/troupe/membership"
)

// A pin placed with On is claimed by the chosen node itself: this node
// calls it on the pins channel (over the cluster's transport, like every
// node-to-node request) and it answers with the owner, or with an error
// that keeps its identity (remoteErrors).

// Methods of the pins channel. Append only: they are on the wire.
const (
	methodClaim = "claim" // take this key, answer with its owner
	methodPing  = "ping"  // the owner lease's heartbeat (lease.go)
)

// claimAnswer is the answer to methodClaim.
type claimAnswer struct {
	Owner string `codec:"o"`
	Token uint64 `codec:"t"`
}

// maxRemoteClaims bounds the remote claims one node serves at once;
// beyond it requests are refused with ErrUnavailable (the caller may
// retry).
const maxRemoteClaims = 64

// pinRemote asks node to claim key.
func (p *Pins) pinRemote(ctx context.Context, node, key string) (Pin, error) {
	resp, err := p.ch.Call(ctx, node, methodClaim, []byte(key))
	switch {
	case errors.Is(err, membership.ErrUnreachable), errors.Is(err, membership.ErrUnknownMember):
		return Pin{}, fmt.Errorf("%w: ask %s to pin %q: %w", ErrUnavailable, node, key, err)
	case err != nil:
		return Pin{}, fmt.Errorf("pins: %s could not pin %q: %w", node, key, err)
	}
	var a claimAnswer
	if err := wire.Unmarshal(resp, &a); err != nil || a.Owner == "" {
		return Pin{}, fmt.Errorf("%w: %s answered a pin of %q with a malformed answer", ErrUnavailable, node, key)
	}
	return Pin{Key: key, Owner: a.Owner, Token: a.Token}, nil
}

// handler serves the pins channel: remote claims only; the channel has no
// broadcasts and no state.
type handler struct{ p *Pins }

var _ membership.CallHandler = handler{}

func (h handler) HandleCall(ctx context.Context, from, method string, req []byte) ([]byte, error) {
	p := h.p
	switch method {
	case methodPing:
		return nil, nil
	case methodClaim:
	default:
		return nil, fmt.Errorf("pins: unknown method %q", method)
	}
	key := string(req)
	if err := checkKey(key); err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if p.mu.busy >= maxRemoteClaims {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: serving %d claims already", ErrUnavailable, maxRemoteClaims)
	}
	p.mu.busy++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.mu.busy--
		p.mu.Unlock()
	}()
	// The claim is bounded by the cluster's life as well as the caller's
	// connection: Shutdown must not wait for a confirmation round.
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	stop := context.AfterFunc(p.ctx, cancel)
	defer stop()
	pin, err := p.claim(ctx, key)
	if err != nil {
		return nil, err
	}
	p.log.Debug("pinned a key for another node", "from", from)
	return wire.Marshal(claimAnswer{Owner: pin.Owner, Token: pin.Token})
}

// claimTimeout bounds a claim served for another node.
const claimTimeout = 5 * time.Second

func (handler) HandleMessage(string, []byte)          {}
func (handler) LocalState(bool) []byte                { return nil }
func (handler) MergeRemoteState(string, []byte, bool) {}
