package pins

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/troupe-go/troupe/membership"

	"github.com/troupe-go/troupe/internal/quorum"
	"github.com/troupe-go/troupe/naming"
)

// The owner's lease. Failure detection fires on both sides of a cut, and
// the minority side learns of its failures one at a time, later than the
// majority learns of its own: a pin owner on the minority side could
// still count a quorum when the majority, having declared it failed,
// claims its pins anew. At the heal the earlier claim wins in the naming
// tree, and a key would go back to an older owner with a smaller token.
//
// So an owner holds its pins and singletons only while it reaches a
// quorum of the members: every OwnerLease/4 it calls them all, and once
// OwnerLease has passed since the start of the last round that a quorum
// answered, it gives up everything it holds (the tombstones travel with
// its records at the heal). On the other side, a node claims nothing
// until OwnerLease has passed since the last member failure it saw. The
// owner's last round that reached a quorum started before the cut, the
// failure is declared after it: the old owner has let go before a new
// one claims, on any clocks that run at the same rate.

// leaseState is when the last round that reached a quorum started.
type leaseState struct {
	mu      sync.Mutex
	reached time.Time
}

// renewed records that a quorum answered a round started at t.
// ever reports whether a round ever reached a quorum.
func (l *leaseState) ever() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.reached.IsZero()
}

func (l *leaseState) renewed(t time.Time) {
	l.mu.Lock()
	if t.After(l.reached) {
		l.reached = t
	}
	l.mu.Unlock()
}

// leaseValid reports whether this node may still hold pins.
func (p *Pins) leaseValid() bool {
	p.lease.mu.Lock()
	defer p.lease.mu.Unlock()
	return time.Since(p.lease.reached) < p.opts.OwnerLease
}

// claimWait returns how long a claim must still wait after the last
// member failure this node saw (see above).
func (p *Pins) claimWait() time.Duration {
	last := p.cluster.LastFailure()
	if last.IsZero() {
		return 0
	}
	return time.Until(last.Add(p.opts.OwnerLease))
}

// holding reports whether this node holds or campaigns for anything that
// the lease guards: pins, claims under way, or registered singletons.
func (p *Pins) holding() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.owned) > 0 || len(p.mu.claiming) > 0 || len(p.mu.singletons) > 0
}

// heartbeat renews the lease while this node holds something, and gives
// up what it holds when the lease runs out.
func (p *Pins) heartbeat() {
	tick := time.NewTicker(p.opts.OwnerLease / 4)
	defer tick.Stop()
	lost := false
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-tick.C:
		}
		if !p.holding() {
			continue
		}
		if !p.leaseValid() {
			// Checked before the round that may renew it: a process
			// that was paused past its lease finds it run out here, and
			// what it held across the gap is forfeit even though the
			// quorum answers again at once. Every tick while it lasts: a
			// claim that was under way may have been granted since.
			if !lost && p.lease.ever() {
				lost = true
				p.log.Warn("could not reach a quorum within the owner lease: releasing pins and stopping singletons", "lease", p.opts.OwnerLease)
			}
			p.forfeit()
		}
		if p.pingQuorum() && lost {
			lost = false
			p.wakeSingletons() // they may claim again
		}
	}
}

// renewLease reports whether the lease runs, renewing it first with a
// round of calls when it does not (after giving up what was held across
// the gap, as the heartbeat does): a claim is made only in touch with a
// quorum, so that it cannot outlive a lease that ran out while it was
// under way (the heartbeat then gives it up).
func (p *Pins) renewLease() bool {
	if p.leaseValid() {
		return true
	}
	p.forfeit()
	return p.pingQuorum()
}

// voters returns the members that the quorum counts, those that run pins
// (TagKey): those alive (this node included), and those failed within
// QuorumWindow. With suspectsLost, the members that failure detection
// suspects count as lost rather than live.
func (p *Pins) voters(suspectsLost bool) (live, lost []string) {
	var suspects []string
	if suspectsLost {
		suspects = slices.DeleteFunc(p.cluster.Suspects(), func(name string) bool {
			m, ok := p.cluster.Member(name)
			return ok && !isVoter(m)
		})
	}
	for _, m := range p.cluster.Members() {
		if (isVoter(m) || m.Name == p.self) && !slices.Contains(suspects, m.Name) {
			live = append(live, m.Name)
		}
	}
	return live, p.failures.Lost(live, suspects, time.Now())
}

// isVoter reports whether m runs pins and so counts toward their quorum.
func isVoter(m membership.Member) bool { return m.Tag(TagKey) != "" }

// pingQuorum calls every member once, and renews the lease when a quorum
// answered.
func (p *Pins) pingQuorum() bool {
	start := time.Now()
	// The suspects are asked too: an answer is better evidence than the
	// suspicion, which flaps on a loaded machine and right after a heal.
	live, lost := p.voters(false)
	// Half the lease: a loaded machine answers slowly, and the lease holds
	// as long as a round that a quorum answered started within it.
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.OwnerLease/2)
	defer cancel()
	if !quorum.Poll(p.self, live, lost, func(m string) bool {
		_, err := p.ch.Call(ctx, m, methodPing, nil)
		return err == nil
	}) {
		return false
	}
	p.lease.renewed(start)
	return true
}

// forfeit gives up every pin this node holds, its lease having run out,
// and the claims under way, and wakes the singletons, which stop and
// unbind theirs. A claim made while the lease ran may still be waiting
// for members across a cut when the lease runs out: its binding, born
// before the other side's claim, would win at the heal.
func (p *Pins) forfeit() {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if err := p.releaseAll(ctx); err != nil {
		p.log.Warn("release pins", "err", err)
	}
	p.mu.Lock()
	claims := slices.Collect(maps.Keys(p.mu.claiming))
	p.mu.Unlock()
	for _, name := range claims {
		if err := p.tree.Unbind(ctx, name); err != nil && !errors.Is(err, naming.ErrNotFound) {
			p.log.Warn("give up a claim", "err", err)
		}
	}
	p.wakeSingletons()
}

// errClaimRaced: a member failed while the claim was under way; the claim
// was withdrawn, and may be made again once the wait after a failure is
// over.
var errClaimRaced = errors.New("pins: a member failed during the claim")

// bindClaim binds name for this node, a confirmed Bind, recorded as a
// claim under way until it returns (see forfeit).
//
// A confirmation settles once every member asked has answered or failed,
// so a claim made at the moment of a cut completes, on this side's
// answers alone, when failure detection declares the other side failed;
// its binding, born before the other side's claim, would win at the heal.
// So a claim during which this node saw a member fail is withdrawn
// (errClaimRaced): the next one waits OwnerLease, then needs the quorum.
//
// One claim of a name runs at a time on a node. A second one's Bind
// would find the first's binding in this copy, not yet confirmed, and
// fail at once with ErrNameBound; its caller would be told this node
// owns the key, and if the members then named an older claim elsewhere
// (at the heal of a cut), two callers would have been told two owners.
func (p *Pins) bindClaim(ctx context.Context, name string) error {
	start := time.Now() // before the wait: a failure during it counts too
	if err := p.claimTurn(ctx, name); err != nil {
		return err
	}
	defer func() {
		p.mu.Lock()
		close(p.mu.claiming[name])
		delete(p.mu.claiming, name)
		p.mu.Unlock()
	}()
	if p.cluster.LastFailure().After(start) {
		return errClaimRaced
	}
	err := p.tree.Bind(ctx, name, nil, naming.Confirmed())
	switch {
	case err != nil && ctx.Err() != nil && !p.ownsName(name):
		// The Bind may have made our binding and then stopped waiting
		// for its confirmation, which goes on without it. Nobody would
		// own that binding or give it up, and a later Pin here would be
		// answered with it, whoever the members chose meanwhile.
		if werr := p.withdraw(name); werr != nil {
			p.log.Warn("withdraw an abandoned claim", "name", name, "err", werr)
		}
		return err
	case err != nil || !p.cluster.LastFailure().After(start):
		return err
	}
	if err := p.withdraw(name); err != nil {
		return fmt.Errorf("pins: withdraw a claim made during a failure: %w", err)
	}
	return errClaimRaced
}

// withdraw removes this node's binding of name. It does not run within
// the caller's context: the caller may be gone, and the binding must go
// anyway.
func (p *Pins) withdraw(name string) error {
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.OwnerLease)
	defer cancel()
	if err := p.tree.Unbind(ctx, name); err != nil && !errors.Is(err, naming.ErrNotFound) {
		return err
	}
	return nil
}

// ownsName reports whether name is the binding of a pin this node owns.
func (p *Pins) ownsName(name string) bool {
	key, ok := strings.CutPrefix(name, p.opts.Prefix+"/")
	if !ok {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, owned := p.mu.owned[key]
	return owned
}

// claimTurn waits until no other claim of name runs on this node, and
// records this one as under way.
func (p *Pins) claimTurn(ctx context.Context, name string) error {
	for {
		p.mu.Lock()
		running, busy := p.mu.claiming[name]
		if !busy {
			p.mu.claiming[name] = make(chan struct{})
			p.mu.Unlock()
			return nil
		}
		p.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for another claim of %q on this node: %w", ErrUnavailable, name, context.Cause(ctx))
		}
	}
}
