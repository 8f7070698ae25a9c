package pins

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
)

// ---- watching ----

// EventType says what happened to a pin.
type EventType int

const (
	// Acquired: the key has a new owner.
	Acquired EventType = iota + 1
	// Released: the owner released the key (Release, Leave, or it
	// lost the quorum).
	Released
	// Lost: the owner failed or left, or (after a partition healed)
	// lost the key to an earlier claim. Pin is the lost pin: Owner names
	// the node that held it.
	Lost
)

func (t EventType) String() string {
	switch t {
	case Acquired:
		return "acquired"
	case Released:
		return "released"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change of a pin.
type Event struct {
	Type   EventType
	Pin    Pin
	Reason string // for Lost
}

// Watcher delivers the pin events under a key prefix, in order.
type Watcher struct {
	p      *Pins
	w      *naming.Watcher
	ctx    context.Context
	events chan Event
	done   chan struct{}
	once   sync.Once
}

// Watch tells of every pin acquired, released or lost under prefix
// ("" for all keys), starting with a Acquired for each key pinned now.
// The watcher stops when ctx ends, on Close, or at Shutdown; its Events
// channel is then closed. A watcher whose reader falls far behind is
// dropped (its channel closes early; see naming.ErrSlowWatcher).
func (p *Pins) Watch(ctx context.Context, prefix string) (*Watcher, error) {
	full := p.opts.Prefix
	if prefix != "" {
		full = p.name(prefix)
	}
	w, err := p.tree.Watch(ctx, full)
	if err != nil {
		return nil, fmt.Errorf("pins: watch pins %q: %w", prefix, err)
	}
	pw := &Watcher{p: p, w: w, ctx: ctx, events: make(chan Event, 64), done: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		w.Close()
		return nil, ErrClosed
	}
	p.mu.watchers[pw] = struct{}{}
	p.wg.Go(pw.run)
	return pw, nil
}

// Events returns the channel of events.
func (w *Watcher) Events() <-chan Event { return w.events }

// Close stops the watcher.
func (w *Watcher) Close() {
	w.once.Do(func() { close(w.done) })
	w.w.Close()
}

func (w *Watcher) run() {
	defer close(w.events)
	defer func() {
		w.p.mu.Lock()
		delete(w.p.mu.watchers, w)
		w.p.mu.Unlock()
	}()
	skip := w.p.opts.Prefix + "/" + singletonDir + "/"
	for ev := range w.w.Events() {
		key, ok := strings.CutPrefix(ev.Name, w.p.opts.Prefix+"/")
		if !ok || strings.HasPrefix(ev.Name, skip) {
			continue
		}
		for _, pe := range w.p.translate(key, ev) {
			select { // beyond 64 queued here, the naming watcher's own buffer absorbs bursts
			case w.events <- pe:
			case <-w.done:
				return
			case <-w.ctx.Done():
				return
			}
		}
	}
}

// translate turns a naming event on a pin's name into pin events.
func (p *Pins) translate(key string, ev naming.Event) []Event {
	pinOf := func(b naming.Binding) Pin {
		if len(b.Offers) == 0 {
			return Pin{Key: key}
		}
		return Pin{Key: key, Owner: b.Offers[0].Node, Token: b.Offers[0].Claimed}
	}
	gone := func(old Pin) Event {
		if m, ok := p.cluster.Member(old.Owner); ok && m.State == membership.StateAlive {
			return Event{Type: Released, Pin: old}
		}
		return Event{Type: Lost, Pin: old, Reason: fmt.Sprintf("owner %s failed or left", old.Owner)}
	}
	switch ev.Type {
	case naming.EventBound:
		return []Event{{Type: Acquired, Pin: pinOf(ev.Binding)}}
	case naming.EventUnbound:
		return []Event{gone(pinOf(ev.Old))}
	case naming.EventRebound:
		old, cur := pinOf(ev.Old), pinOf(ev.Binding)
		if old.Owner == cur.Owner && old.Token == cur.Token {
			return nil
		}
		return []Event{gone(old), {Type: Acquired, Pin: cur}}
	case naming.EventConflict:
		winner := pinOf(ev.Binding)
		return []Event{{Type: Lost, Pin: pinOf(ev.Old), Reason: fmt.Sprintf("an earlier claim by %s won", winner.Owner)}}
	}
	return nil
}
