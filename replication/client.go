package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/troupe-go/troupe/internal/wire"
	"github.com/troupe-go/troupe/membership"
)

// The client side of the session protocol: this node's calls to its
// peers over the sessions channel. server.go answers them.

// reqBufs holds *[]byte buffers for encoding requests; those that grew
// past maxPooledReq (full copies of large sessions) are left to the GC.
var reqBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1<<10); return &b }}

const maxPooledReq = 64 << 10

// errPeerGone is returned by call for a peer that is not a live member
// holding sessions.
var errPeerGone = errors.New("replication: peer not available")

// call sends a request to a peer and decodes its answer into resp. It
// returns the time the request was sent, for leases.
func (s *Sessions) call(ctx context.Context, name, method string, req, resp any) (time.Time, error) {
	if !s.isAlive(name) {
		return time.Time{}, fmt.Errorf("%w: %s", errPeerGone, name)
	}
	return s.callAny(ctx, name, method, req, resp)
}

// callAny is call to a peer membership may not show alive: one declared
// failed may be back (a healed cut) before failure detection says so.
func (s *Sessions) callAny(ctx context.Context, name, method string, req, resp any) (time.Time, error) {
	// The transport does not keep the body after Call returns: encode it
	// into a pooled buffer.
	bp := reqBufs.Get().(*[]byte)
	body, err := wire.Append((*bp)[:0], req)
	defer func() {
		if cap(body) <= maxPooledReq {
			*bp = body
			reqBufs.Put(bp)
		}
	}()
	if err != nil {
		return time.Time{}, err
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	sent := time.Now()
	out, err := s.ch.Call(ctx, name, method, body)
	if err != nil {
		if errors.Is(err, membership.ErrMessageTooLarge) {
			err = fmt.Errorf("%w (the cluster's MaxMessageSize must be at least Options.MinMessageSize, %d)", err, s.opts.MinMessageSize())
		}
		return sent, err
	}
	if resp != nil {
		if err := wire.Unmarshal(out, resp); err != nil {
			return sent, fmt.Errorf("replication: %s from %s: %w", method, name, err)
		}
	}
	return sent, nil
}

// retryable reports whether a failed call to a peer may succeed later
// without anything else changing, or after membership notices the peer
// is gone or its sessions stopped (the failover then gives the session
// another secondary), or after the peer sees this node's tag (it refused
// us: errRefused).
func retryable(err error) bool {
	return errors.Is(err, membership.ErrUnreachable) || errors.Is(err, membership.ErrUnknownMember) ||
		errors.Is(err, errPeerGone) || errors.Is(err, errRefused) || notServing(err)
}

// processGone reports whether a call's error shows that the peer's
// process serves no sessions: its port refused the connection (the
// process stopped) or its sessions are shut down. Such a peer holds no
// copy, whatever it held before.
func processGone(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || notServing(err)
}

// notServing reports whether a call's error says that the peer's node
// runs but its sessions do not: they were shut down (errPeerClosed), or
// its transport has no sessions channel (any more), which is the only
// source of a RemoteError that matches none of callErrors.
func notServing(err error) bool {
	if errors.Is(err, errPeerClosed) {
		return true
	}
	rerr, ok := errors.AsType[*membership.RemoteError](err)
	return ok && rerr.Unwrap() == nil
}

// apply sends an apply request and records the lease in its reply.
func (s *Sessions) apply(ctx context.Context, name string, req *applyReq) (reply, error) {
	var r reply
	sent, err := s.call(ctx, name, methodApply, req, &r)
	if err != nil {
		return r, err
	}
	s.noteReply(name, sent, r.G, r.N)
	return r, nil
}

// fullCopy builds the apply request that copies st whole.
func (s *Sessions) fullCopy(key string, st *state) *applyReq {
	s.stats.fullCopies.Add(1)
	return &applyReq{
		From: s.self, Inc: s.inc, Key: key, Epoch: st.epoch, Members: st.members,
		Version: st.version, Full: true, Set: st.attrs, Contested: st.contested,
	}
}

// resolveOne asks p whether our copy or its copy of key wins.
func (s *Sessions) resolveOne(ctx context.Context, p, key string, st state) (win bool, err error) {
	var r resolveReply
	req := resolveReq{From: s.self, Items: []rankWire{{Key: key, Epoch: st.epoch, Members: st.members, Primary: s.self}}}
	if _, err := s.call(ctx, p, methodResolve, req, &r); err != nil {
		return false, err
	}
	if len(r.St) != 1 {
		return false, fmt.Errorf("replication: resolve from %s: %d answers for 1 item", p, len(r.St))
	}
	switch r.St[0] {
	case stOK:
		return true, nil
	case stStale:
		return false, nil
	}
	// Busy: the peer could not compare now. Losing on that would drop a
	// newer copy for an older one; the contest stays open.
	return false, fmt.Errorf("replication: resolve from %s: %v", p, r.St[0])
}

func (s *Sessions) sendTouch(name string, keys []string) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	defer cancel()
	var r reply
	sent, err := s.call(ctx, name, methodTouch, touchReq{From: s.self, Keys: keys}, &r)
	if err != nil {
		s.log.Debug("touch failed", "peer", name, "err", err)
		return
	}
	s.noteReply(name, sent, r.G, r.N)
}

func (s *Sessions) sendDrop(name, key string, rk rank, gone bool) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	defer cancel()
	req := dropReq{From: s.self, Key: key, Epoch: rk.epoch, Members: rk.members, Primary: rk.primary, Gone: gone}
	if _, err := s.call(ctx, name, methodDrop, req, nil); err != nil {
		s.log.Debug("drop not delivered", "peer", name, "err", err)
	}
}
