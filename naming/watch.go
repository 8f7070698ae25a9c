package naming

import (
	"context"
	"sync"

	iradix "github.com/hashicorp/go-immutable-radix/v2"
)

// Watcher delivers the changes of the names under one prefix, in the order
// this node applied them. It starts with an EventBound for every name
// bound when Watch was called (in name order), then every change after
// that. A watcher that falls Options.WatchBuffer events behind is dropped
// (ErrSlowWatcher): a slow reader never slows the tree.
type Watcher struct {
	prefix string
	max    int
	ctx    context.Context
	c      chan Event
	wake   chan struct{}
	stop   chan struct{}
	quit   <-chan struct{}
	done   chan struct{}
	snap   *iradix.Tree[*entry] // set by the loop when it registers the watcher

	mu struct {
		sync.Mutex
		queue  []Event
		err    error
		closed bool
	}
}

// Watch watches the names under prefix ("" for all; "jms" covers "jms"
// and "jms/..."). The watcher stops when ctx ends, on Close, or when the
// tree closes; its Events channel is then closed.
func (t *Tree) Watch(ctx context.Context, prefix string) (*Watcher, error) {
	p, err := normalize(prefix, true)
	if err != nil {
		return nil, err
	}
	w := &Watcher{
		prefix: p, max: t.opts.WatchBuffer, ctx: ctx, quit: t.quit,
		c:    make(chan Event),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	t.wg.Add(1)
	t.mu.Unlock()
	if err := t.do(ctx, &op{watch: w}); err != nil {
		// Not registered, or registered but the caller gave up: the loop
		// drops a closed watcher.
		w.Close()
		t.wg.Done()
		return nil, err
	}
	go func() { defer t.wg.Done(); w.run() }()
	return w, nil
}

// Events returns the channel of events; it is closed when the watcher
// stops.
func (w *Watcher) Events() <-chan Event { return w.c }

// Err returns ErrSlowWatcher if the watcher was dropped for falling
// behind, and nil otherwise.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.err
}

// Close stops the watcher. Safe to call more than once, from any
// goroutine; it does not wait for the delivering goroutine.
func (w *Watcher) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.mu.closed {
		w.mu.closed = true
		close(w.stop)
	}
}

func (w *Watcher) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.closed
}

// push never blocks: the loop calls it.
func (w *Watcher) push(ev Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.mu.closed {
		return
	}
	if len(w.mu.queue) >= w.max {
		w.mu.err = ErrSlowWatcher
		w.mu.closed = true
		w.mu.queue = nil
		close(w.stop)
		return
	}
	w.mu.queue = append(w.mu.queue, ev)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Watcher) send(ev Event) bool {
	select {
	case w.c <- ev:
		return true
	case <-w.stop:
	case <-w.quit:
	case <-w.ctx.Done():
	}
	return false
}

func (w *Watcher) run() {
	defer close(w.c)
	defer w.Close()
	if w.snap != nil {
		it := w.snap.Root().Iterator()
		it.SeekPrefix([]byte(w.prefix))
		for {
			k, e, ok := it.Next()
			if !ok {
				break
			}
			if !under(string(k), w.prefix) {
				continue
			}
			if !w.send(Event{Type: EventBound, Name: e.b.Name, Binding: e.b}) {
				return
			}
		}
		w.snap = nil
	}
	for {
		w.mu.Lock()
		batch := w.mu.queue
		w.mu.queue = nil
		w.mu.Unlock()
		for _, ev := range batch {
			if !w.send(ev) {
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-w.wake:
		case <-w.stop:
			return
		case <-w.quit:
			return
		case <-w.ctx.Done():
			return
		}
	}
}
