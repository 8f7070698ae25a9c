package replication

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Calls made without a deadline get Options.CallTimeout. A context with
// a timer of its own for every Save costs five allocations (the context,
// its timer, its Done channel...), a tenth of all that a replicated
// request allocates; so calls that start within the same deadlineSlack
// share one, and each gets between CallTimeout and
// CallTimeout+deadlineSlack.

const deadlineSlack = 10 * time.Millisecond

// sharedDeadline is the context that calls starting before until share.
// Its cancel function is never needed: the context ends at its deadline,
// or with its parent at Shutdown, and both stop its timer.
type sharedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
	until  time.Time
}

type deadlines struct {
	parent  context.Context // ends at Shutdown
	timeout time.Duration
	cur     atomic.Pointer[sharedDeadline]
	mu      sync.Mutex // serializes replacing cur
}

// shared returns a context that ends in timeout (at most deadlineSlack
// more) from now, or when parent ends.
func (d *deadlines) shared() context.Context {
	now := time.Now()
	if c := d.cur.Load(); c != nil && now.Before(c.until) {
		return c.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.cur.Load(); c != nil && now.Before(c.until) {
		return c.ctx
	}
	c := &sharedDeadline{until: now.Add(deadlineSlack)}
	c.ctx, c.cancel = context.WithDeadline(d.parent, now.Add(d.timeout+deadlineSlack))
	d.cur.Store(c)
	return c.ctx
}

// bound returns ctx bounded by the timeout: ctx itself when it has a
// deadline; when it can never end, the shared context, which carries
// ctx's values; otherwise a context of its own, whose cancel the caller
// must call.
func (d *deadlines) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	if ctx.Done() == nil {
		return d.detached(ctx), func() {}
	}
	return context.WithTimeout(ctx, d.timeout)
}

// detached returns a context bounded by the timeout from now, whatever
// becomes of ctx, with ctx's values.
func (d *deadlines) detached(ctx context.Context) context.Context {
	return valuesOf{Context: d.shared(), values: ctx}
}

// valuesOf ends as its Context does and carries the values of another.
type valuesOf struct {
	context.Context
	values context.Context
}

// Value asks the context that ends first. Its chain (a deadline on
// Sessions' context) holds no values but the context package's own, by
// which context.Cause finds what ended a context: answered from values,
// which may be an HTTP request's, Cause would report that the request
// is still running while the deadline has passed, and a lock wait
// (entry.lock) would return nil without the lock.
func (c valuesOf) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}
