package pins

import "sync/atomic"

// Stats is a snapshot of this node's pins and singletons: what it holds
// now, and counters since New, which only grow. Between starts and
// stops, SingletonStarts minus SingletonStops is SingletonsRunning; a
// singleton that moves to this node counts a start here and a stop on
// the node it left, if that one is still running.
type Stats struct {
	Held              int    // pins this node claimed and has not released
	Claims            uint64 // claims this node won (Pin, here or for another node's On)
	Releases          uint64 // pins given up: Release, Leave, or a lost quorum
	SingletonsRunning int    // singletons whose function runs here now
	SingletonStarts   uint64 // singleton functions started here (restarts too)
	SingletonStops    uint64 // singleton functions that stopped here, ended or returned
}

type counters struct {
	claims, releases, singletonStarts, singletonStops atomic.Uint64
}

// Stats returns a snapshot of the counts.
func (p *Pins) Stats() Stats {
	s := Stats{
		Claims:          p.stats.claims.Load(),
		Releases:        p.stats.releases.Load(),
		SingletonStarts: p.stats.singletonStarts.Load(),
		SingletonStops:  p.stats.singletonStops.Load(),
	}
	p.mu.Lock()
	s.Held = len(p.mu.owned)
	for _, sg := range p.mu.singletons {
		if sg.Running() {
			s.SingletonsRunning++
		}
	}
	p.mu.Unlock()
	return s
}
