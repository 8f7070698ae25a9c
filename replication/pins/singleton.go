package pins

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
)

// singletonDir is the part of the pins prefix that holds singletons: a
// singleton s is pinned as Prefix/singletons/s, and the nodes that
// registered it offer Prefix/singletons/s/nodes (a clusterable name).
const singletonDir = "singletons"

// restartDelay is how long a singleton whose function returned while
// this node still owns it waits before running it again.
const restartDelay = time.Second

// SingletonFunc is a singleton service's body. It runs on one node at a
// time and should run until ctx ends, which happens when this node loses
// the singleton (Stop, Leave, Shutdown, or a lost quorum on the minority
// side of a partition). token is this run's fencing token: it only grows
// from one owner to the next, so a resource the service writes to can
// refuse a lower token, from an older owner still running somewhere. If
// fn returns while this node still owns the singleton, it is run again a
// second later with the same token.
type SingletonFunc func(ctx context.Context, token uint64)

// SingletonOption modifies RunSingleton.
type SingletonOption func(*singletonOptions)

type singletonOptions struct {
	role, node string
}

// PreferRole makes registered nodes with this role claim the singleton
// first when it has no owner; the others wait Options.PreferDelay. It
// does not move a running singleton. Every node should register the
// singleton with the same preferences.
func PreferRole(role string) SingletonOption {
	return func(o *singletonOptions) { o.role = role }
}

// PreferNode is PreferRole for one node, and takes precedence over it.
func PreferNode(node string) SingletonOption {
	return func(o *singletonOptions) { o.node = node }
}

// Singleton is this node's registration of a singleton service.
type Singleton struct {
	p        *Pins
	name     string
	fn       SingletonFunc
	o        singletonOptions
	owner    string // the singleton's pin in the tree
	nodes    string // the registered nodes' offers
	wake     chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
	graceful atomic.Bool
	running  atomic.Bool
	token    atomic.Uint64
}

// RunSingleton registers this node for the singleton service name and
// returns. Among the registered nodes, one at a time runs fn: when it
// fails or leaves, or stops the singleton, another starts it. The
// registration lasts until Stop, until ctx ends, or until Leave or
// Shutdown.
func (p *Pins) RunSingleton(ctx context.Context, name string, fn SingletonFunc, opts ...SingletonOption) (*Singleton, error) {
	if fn == nil {
		return nil, fmt.Errorf("%w: nil singleton function", ErrInvalidOptions)
	}
	var o singletonOptions
	for _, f := range opts {
		f(&o)
	}
	s := &Singleton{p: p, name: name, fn: fn, o: o,
		owner: p.name(singletonDir + "/" + name),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	s.nodes = s.owner + "/nodes"
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if _, dup := p.mu.singletons[name]; dup {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: singleton %q is already registered on this node", ErrInvalidOptions, name)
	}
	p.mu.singletons[name] = s
	p.mu.Unlock()
	err := p.tree.Bind(ctx, s.nodes, nil, naming.Clusterable())
	if err != nil && !errors.Is(err, naming.ErrNameBound) {
		p.mu.Lock()
		delete(p.mu.singletons, name)
		p.mu.Unlock()
		if errors.Is(err, naming.ErrInvalidName) {
			return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
		}
		return nil, fmt.Errorf("pins: register singleton %q: %w", name, err)
	}
	w, err := p.tree.Watch(p.ctx, s.owner)
	if err != nil {
		p.mu.Lock()
		delete(p.mu.singletons, name)
		p.mu.Unlock()
		return nil, fmt.Errorf("pins: watch singleton %q: %w", name, err)
	}
	runCtx, cancel := context.WithCancel(p.ctx)
	s.cancel = cancel
	stop := context.AfterFunc(ctx, cancel)
	p.mu.Lock()
	if p.mu.closed { // Shutdown began meanwhile: it may be waiting already
		delete(p.mu.singletons, name)
		p.mu.Unlock()
		stop()
		cancel()
		w.Close()
		close(s.done)
		return nil, ErrClosed
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer stop()
		s.loop(runCtx, w)
	}()
	return s, nil
}

// Stop unregisters this node: if it runs the singleton, fn's context
// ends, Stop waits for fn to return, and then hands the singleton over.
func (s *Singleton) Stop() {
	s.graceful.Store(true)
	s.cancel()
	<-s.done
}

// Running reports whether fn is running on this node now.
func (s *Singleton) Running() bool { return s.running.Load() }

// Key is the singleton's pin key: pass it to Pins.Owner, or return it
// from the keyOf function of Pins.Handler to forward requests to the node
// that runs the singleton.
func (s *Singleton) Key() string { return SingletonKey(s.name) }

// SingletonKey is the pin key of the singleton service name, on any node,
// registered or not.
func SingletonKey(name string) string { return singletonDir + "/" + name }

// Owner returns the singleton's current owner, as Pins.Owner does.
func (s *Singleton) Owner() (Pin, error) { return s.p.Owner(s.Key()) }

func (p *Pins) wakeSingletons() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.mu.singletons {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// loop is the singleton's campaign: it reacts to changes of the
// singleton's names, to member events (through wake) and to its own
// timers, and starts or stops fn.
func (s *Singleton) loop(ctx context.Context, w *naming.Watcher) {
	p := s.p
	defer close(s.done)
	defer w.Close()
	var (
		fnCancel     context.CancelFunc
		fnDone       chan struct{}
		unownedSince time.Time
		restartAt    time.Time
	)
	stopFn := func() {
		if fnCancel != nil {
			fnCancel()
			<-fnDone
			fnCancel, fnDone = nil, nil
			s.running.Store(false)
			p.stats.singletonStops.Add(1)
			p.log.Info("singleton stopped", "singleton", s.name)
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		var wait time.Duration = time.Hour
		pin, err := s.Owner()
		mine := err == nil && pin.Owner == p.self
		q := p.quorum() && (!mine || p.leaseValid())
		now := time.Now()
		switch {
		case fnCancel != nil && (!mine || !q):
			stopFn()
			if mine {
				s.unbind() // lost the quorum or the lease: let the majority side run it
			}
			continue
		case mine && !p.leaseValid():
			// Our claim outlived the owner lease (this process was
			// paused, say): it is forfeit.
			s.unbind()
			continue
		case fnCancel == nil && mine && q && now.Before(restartAt):
			wait = restartAt.Sub(now)
		case fnCancel == nil && mine && q:
			fnCtx, cancel := context.WithCancel(ctx)
			fnCancel, fnDone = cancel, make(chan struct{})
			s.token.Store(pin.Token)
			s.running.Store(true)
			p.stats.singletonStarts.Add(1)
			p.log.Info("singleton started", "singleton", s.name, "token", pin.Token)
			done := fnDone
			p.wg.Go(func() {
				defer close(done)
				s.fn(fnCtx, pin.Token)
			})
		case errors.Is(err, ErrNotPinned) && q:
			if delay := p.settling(); delay > 0 {
				// The preferred nodes' head start counts from the end of it.
				unownedSince = time.Time{}
				wait = delay
				break
			}
			if unownedSince.IsZero() {
				unownedSince = now
			}
			if delay := unownedSince.Add(p.opts.PreferDelay).Sub(now); delay > 0 && !s.preferred() {
				wait = delay
				break
			}
			if !p.renewLease() {
				wait = restartDelay
				break
			}
			if err := p.bindClaim(ctx, s.owner); err != nil && !errors.Is(err, naming.ErrNameBound) && !errors.Is(err, errClaimRaced) && ctx.Err() == nil {
				p.log.Warn("claim singleton", "singleton", s.name, "err", err)
				wait = restartDelay
				break
			}
			continue
		}
		if err == nil {
			unownedSince = time.Time{}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
		case _, ok := <-w.Events():
			if !ok && ctx.Err() == nil {
				p.log.Warn("singleton watcher stopped; unregistering", "singleton", s.name)
				s.cancel()
			}
		case <-s.wake:
		case <-timer.C:
		case <-fnDone:
			// fn returned by itself while this node owns the singleton.
			fnCancel()
			fnCancel, fnDone = nil, nil
			s.running.Store(false)
			p.stats.singletonStops.Add(1)
			restartAt = time.Now().Add(restartDelay)
		}
	}
	stopFn()
	p.mu.Lock()
	delete(p.mu.singletons, s.name)
	p.mu.Unlock()
	if s.graceful.Load() {
		// The registration goes first, so that when the others see the
		// singleton free they no longer count this node as the one to
		// prefer, and claim it at once.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.tree.Unbind(ctx, s.nodes)
		if pin, err := s.Owner(); err == nil && pin.Owner == p.self {
			s.unbind()
		}
	}
}

func (s *Singleton) unbind() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.p.tree.Unbind(ctx, s.owner); err != nil && !errors.Is(err, naming.ErrNotFound) {
		s.p.log.Warn("release singleton", "singleton", s.name, "err", err)
	}
}

// preferred reports whether this node should claim the singleton at once:
// no live member scores higher on the preferences (one that does may be
// about to register), and among the live registered nodes it comes first
// (highest score, then name).
func (s *Singleton) preferred() bool {
	score := func(m membership.Member) int {
		n := 0
		if s.o.node != "" && m.Name == s.o.node {
			n += 2
		}
		if s.o.role != "" && m.Role == s.o.role {
			n++
		}
		return n
	}
	mine := score(s.p.cluster.LocalMember())
	for _, m := range s.p.cluster.Members() {
		if score(m) > mine {
			return false
		}
	}
	for _, m := range s.p.liveOffers(s.nodes) { // sorted by name
		if score(m) == mine {
			return m.Name == s.p.self
		}
	}
	return true // not registered here yet as far as the tree shows
}
