package replication

import (
	"context"
	"slices"
)

// asyncBatch bounds the changes sent to a secondary in one request.
const asyncBatch = 256

// asyncQueue holds, in ModeAsync, the changes waiting for one secondary.
// One goroutine per secondary sends them in order, in batches.
type asyncQueue struct {
	peer string
	ch   chan asyncItem
}

type asyncItem struct {
	e   *entry
	req *applyReq
}

// enqueue queues a change for peer, waiting while the queue is full.
func (s *Sessions) enqueue(ctx context.Context, peer string, e *entry, req *applyReq) error {
	q := s.queueFor(peer)
	if q == nil {
		return ErrClosed
	}
	select {
	case q.ch <- asyncItem{e, req}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-s.ctx.Done():
		return ErrClosed
	}
}

func (s *Sessions) queueFor(peer string) *asyncQueue {
	s.async.Lock()
	defer s.async.Unlock()
	if q := s.async.queues[peer]; q != nil {
		return q
	}
	if s.isClosed() {
		return nil
	}
	q := &asyncQueue{peer: peer, ch: make(chan asyncItem, s.opts.AsyncQueue)}
	s.async.queues[peer] = q
	s.spawn(func() { s.runQueue(q) })
	return q
}

func (s *Sessions) runQueue(q *asyncQueue) {
	batch := make([]asyncItem, 0, asyncBatch)
	for {
		batch = batch[:0]
		select {
		case it := <-q.ch:
			batch = append(batch, it)
		case <-s.ctx.Done():
			return
		}
	fill:
		for len(batch) < asyncBatch {
			select {
			case it := <-q.ch:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		s.sendBatch(q.peer, batch)
	}
}

// sendBatch delivers a batch, retrying while the peer is a live member;
// once it is not, the batch is dropped: the failover gives its sessions
// a new secondary with a full copy.
func (s *Sessions) sendBatch(peer string, batch []asyncItem) {
	req := batchReq{From: s.self, Items: make([]applyReq, len(batch))}
	for i, it := range batch {
		req.Items[i] = *it.req
		req.Items[i].From = ""
	}
	backoff := minBackoff
	for {
		if !s.isAlive(peer) || s.ctx.Err() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
		var r batchReply
		sent, err := s.call(ctx, peer, methodBatch, req, &r)
		cancel()
		if err == nil && len(r.St) == len(batch) && len(r.G) == len(batch) {
			s.noteReply(peer, sent, slices.Min(r.G), r.N)
			for i, st := range r.St {
				if st != stOK {
					s.asyncFix(peer, batch[i], st)
				}
			}
			return
		}
		if err == nil {
			s.log.Warn("async batch: wrong number of answers", "peer", peer)
			return
		}
		pause(s.ctx, s.changes(), backoff) // the loop checks s.ctx
		backoff = min(2*backoff, maxBackoff)
	}
}

// asyncFix handles a change the secondary did not apply. The entry's
// write lock is not taken: a Save holding it may be waiting for room in
// this very queue.
func (s *Sessions) asyncFix(peer string, it asyncItem, st status) {
	cur := it.e.state()
	if cur.role != rolePrimary || cur.secondary != peer || cur.epoch != it.req.Epoch {
		return // the session moved on; this change no longer matters
	}
	switch st {
	case stGap:
		// A full copy of the current state; changes still queued are
		// older or build on it, and the secondary skips the older ones.
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
		defer cancel()
		if _, err := s.apply(ctx, peer, s.fullCopy(it.e.key, &cur)); err != nil {
			s.log.Debug("async full copy failed", "peer", peer, "err", err)
		}
	case stStale:
		s.dropStale(it.e, cur)
	case stGone:
		s.drop(it.e, "invalidated (async)")
		s.tomb.add(it.e.key, s.tombTTL())
	}
}
