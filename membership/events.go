package membership

import (
	"strconv"
	"sync"
)

// EventType says what happened to a member.
type EventType int

const (
	EventJoin   EventType = iota // a member joined (or was already there when the subscription started)
	EventLeave                   // a member left gracefully
	EventFail                    // a member was declared failed
	EventUpdate                  // a member's metadata changed
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	case EventUpdate:
		return "update"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one change of the member list.
type Event struct {
	Type   EventType
	Member Member
}

// maxQueuedEvents bounds what one subscriber may have waiting. A
// subscriber that falls this far behind is dropped (ErrSlowSubscriber)
// rather than letting the cluster block or its queue grow without bound.
const maxQueuedEvents = 1 << 16

// Subscription delivers member events in the order this node saw them.
// Every subscriber sees the same order. Events are delivered from the
// subscription's own goroutine, so the receiver may call back into the
// Cluster.
type Subscription struct {
	c    chan Event
	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	mu struct {
		sync.Mutex
		queue  []Event
		err    error
		closed bool
	}
}

func newSubscription(initial []Event) *Subscription {
	s := &Subscription{
		c:    make(chan Event),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.mu.queue = initial
	return s
}

// Events returns the channel of events. It starts with a join event for
// every member that was alive when Subscribe was called, and is closed by
// Close, by the cluster's Shutdown, or when the subscriber is too slow
// (see Err).
func (s *Subscription) Events() <-chan Event { return s.c }

// Err returns ErrSlowSubscriber if the subscription was dropped for
// falling behind, and nil otherwise.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.err
}

// Close stops the subscription and waits until its goroutine has exited.
// It is safe to call more than once and from any goroutine except the one
// reading Events.
func (s *Subscription) Close() {
	s.mu.Lock()
	if !s.mu.closed {
		s.mu.closed = true
		close(s.stop)
	}
	s.mu.Unlock()
	<-s.done
}

// closeNow finishes a subscription that never ran, for a Cluster that
// has stopped.
func (s *Subscription) closeNow() {
	s.mu.closed = true
	s.mu.queue = nil
	close(s.stop)
	close(s.c)
	close(s.done)
}

// push never blocks: the caller holds the cluster's lock.
func (s *Subscription) push(ev Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return
	}
	if len(s.mu.queue) >= maxQueuedEvents {
		s.mu.err = ErrSlowSubscriber
		s.mu.closed = true
		s.mu.queue = nil
		close(s.stop)
		return
	}
	s.mu.queue = append(s.mu.queue, ev)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run moves queued events to the channel until stopped.
func (s *Subscription) run() {
	defer close(s.done)
	defer close(s.c)
	for {
		s.mu.Lock()
		batch := s.mu.queue
		s.mu.queue = nil
		s.mu.Unlock()
		for _, ev := range batch {
			select {
			case s.c <- ev:
			case <-s.stop:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
	}
}
