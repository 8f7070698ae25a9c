package replication

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// Group commit: concurrent sync Saves whose sessions share a secondary
// share requests to it. A Save that finds no request in flight to that
// secondary sends its change at once, on its own goroutine, so a lone
// client pays nothing; Saves that arrive meanwhile queue, and when the
// answer comes back the first of them sends everything queued in one
// batch. Each session's Saves are serialized by its lock, so a batch never
// holds two changes of one session.

// groupMax bounds the changes in one batch; their size is bounded by
// MaxSessionSize plus frameOverhead, which fits a message when the
// cluster's MaxMessageSize is at least Options.MinMessageSize.
const groupMax = 128

type groupQueue struct {
	mu      sync.Mutex
	busy    bool         // a leader is sending, or has been chosen
	handoff *groupWaiter // the waiter told to lead next, until it does
	pending []*groupWaiter
}

type groupWaiter struct {
	req  *applyReq
	size int
	done chan groupResult // buffered: the leader never blocks on it
}

type groupResult struct {
	lead bool // no result: you send the next batch
	r    reply
	err  error
}

func (s *Sessions) groupFor(peer string) *groupQueue {
	s.async.Lock()
	defer s.async.Unlock()
	if s.async.groups == nil {
		s.async.groups = map[string]*groupQueue{}
	}
	q := s.async.groups[peer]
	if q == nil {
		q = &groupQueue{}
		s.async.groups[peer] = q
	}
	return q
}

// applySync sends a change to peer, alone or in a batch with other
// Saves' changes, and returns the peer's answer to it.
func (s *Sessions) applySync(ctx context.Context, peer string, req *applyReq) (reply, error) {
	q := s.groupFor(peer)
	q.mu.Lock()
	if !q.busy {
		// Nothing in flight to peer (so nothing queued either): send
		// at once, alone.
		q.busy = true
		q.mu.Unlock()
		r, err := s.apply(ctx, peer, req)
		s.passLead(q)
		return r, err
	}
	w := waiters.Get().(*groupWaiter)
	w.req, w.size = req, changeSize(req)
	q.pending = append(q.pending, w)
	q.mu.Unlock()
	select {
	case res := <-w.done:
		if res.lead {
			s.sendGroup(ctx, peer, q, w)
			res = <-w.done
		}
		putWaiter(w)
		return res.r, res.err
	case <-ctx.Done():
		q.mu.Lock()
		if q.handoff == w {
			// Told to lead: the others wait for us, so lead anyway,
			// and consume the message that said so.
			q.mu.Unlock()
			<-w.done
			s.sendGroup(ctx, peer, q, w)
			res := <-w.done
			putWaiter(w)
			return res.r, res.err
		}
		if i := slices.Index(q.pending, w); i >= 0 {
			q.pending = slices.Delete(q.pending, i, i+1)
			q.mu.Unlock()
			putWaiter(w) // nobody will answer it
			return reply{}, context.Cause(ctx)
		}
		// It is in a batch in flight: its answer is dropped, and w is
		// not reused, since that answer is still to come. Either way
		// Save treats the version as used.
		q.mu.Unlock()
		return reply{}, context.Cause(ctx)
	}
}

// waiters recycles groupWaiters (and their channels): a queued Save
// would otherwise allocate both. A waiter goes back only once nothing
// more will be sent on its channel.
var waiters = sync.Pool{New: func() any { return &groupWaiter{done: make(chan groupResult, 1)} }}

func putWaiter(w *groupWaiter) {
	w.req = nil
	waiters.Put(w)
}

// sendGroup sends the queued changes, the leader's own (w) among them,
// and hands the lead on. A change sent alone is the leader's: it is sent
// within the leader's ctx. A batch carries others' changes too and is
// sent within CallTimeout, whatever becomes of the leader's context.
func (s *Sessions) sendGroup(ctx context.Context, peer string, q *groupQueue, w *groupWaiter) {
	q.mu.Lock()
	q.handoff = nil
	n, size := 0, 0
	limit := s.opts.MaxSessionSize + frameOverhead
	for n < len(q.pending) && n < groupMax && (n == 0 || size+q.pending[n].size <= limit) {
		size += q.pending[n].size
		n++
	}
	batch := q.pending[:n:n]
	q.pending = q.pending[n:]
	q.mu.Unlock()

	if len(batch) == 1 && batch[0] == w {
		r, err := s.apply(ctx, peer, w.req)
		w.done <- groupResult{r: r, err: err}
	} else {
		s.sendBatchSync(s.deadlines.shared(), peer, batch)
	}
	s.passLead(q)
}

// passLead hands the lead to the first change queued while a request
// was in flight, or marks the queue idle.
func (s *Sessions) passLead(q *groupQueue) {
	q.mu.Lock()
	if len(q.pending) > 0 {
		q.handoff = q.pending[0]
		q.pending[0].done <- groupResult{lead: true}
	} else {
		q.busy = false
	}
	q.mu.Unlock()
}

func (s *Sessions) sendBatchSync(ctx context.Context, peer string, batch []*groupWaiter) {
	req := batchReq{From: s.self, Items: make([]applyReq, len(batch))}
	for i, w := range batch {
		req.Items[i] = *w.req
		req.Items[i].From = ""
	}
	var r batchReply
	sent, err := s.call(ctx, peer, methodBatch, req, &r)
	if err == nil && (len(r.St) != len(batch) || len(r.G) != len(batch)) {
		err = errors.New("replication: batch answer does not match the request")
	}
	if err == nil {
		s.noteReply(peer, sent, slices.Min(r.G), r.N)
	}
	for i, w := range batch {
		if err != nil {
			w.done <- groupResult{err: err}
			continue
		}
		w.done <- groupResult{r: reply{St: r.St[i], G: r.G[i], N: r.N}}
	}
}

func changeSize(r *applyReq) int {
	n := 64 + len(r.Key)
	for _, a := range r.Set {
		n += len(a.k) + len(a.v) + 8
	}
	for _, k := range r.Del {
		n += len(k) + 4
	}
	return n
}
