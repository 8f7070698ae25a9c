package naming

import (
	"math/rand/v2"
	"sync/atomic"

	"github.com/troupe-go/troupe/membership"
)

// Candidate is one live offer as a Policy sees it.
type Candidate struct {
	Offer
	// Member is the offering node as membership sees it: its role, group,
	// weight and tags. Zero for a cluster-scoped binding, which no node
	// owns.
	Member membership.Member
	// Local is true for the offer of this node.
	Local bool
}

// Policy picks one offer of a name. Select gives it the live offers
// (never those of a node that membership does not see alive), in node
// order, at least one. Pick returns the index of its choice, or -1 for
// none (Select then fails with ErrNoOffer). Pick may reorder cands (a
// filter moves the candidates it keeps to the front) and must not keep
// the slice. Policies are called concurrently and must be safe for that.
type Policy interface {
	Pick(cands []Candidate) int
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(cands []Candidate) int

// Pick implements Policy.
func (f PolicyFunc) Pick(cands []Candidate) int { return f(cands) }

// First picks the first candidate: the offer of the lowest node name. It
// is the policy that does nothing.
func First() Policy { return PolicyFunc(func([]Candidate) int { return 0 }) }

// RoundRobin returns a policy that takes the offers in turn. The turn is
// kept by the policy value: one RoundRobin per name (or per client)
// cycles exactly through a name's offers while they do not change.
func RoundRobin() Policy { return &roundRobin{} }

type roundRobin struct{ n atomic.Uint64 }

func (p *roundRobin) Pick(cands []Candidate) int {
	return int((p.n.Add(1) - 1) % uint64(len(cands)))
}

// Random picks an offer uniformly at random.
func Random() Policy {
	return PolicyFunc(func(cands []Candidate) int { return rand.IntN(len(cands)) })
}

// Weighted picks an offer at random in proportion to its node's weight
// (membership.Config.Weight; default 100). Nodes of weight 0 or less are
// picked only if every node has such a weight, then uniformly.
func Weighted() Policy {
	return PolicyFunc(func(cands []Candidate) int {
		var total int64
		for _, c := range cands {
			total += int64(max(c.Member.Weight, 0))
		}
		if total == 0 {
			return rand.IntN(len(cands))
		}
		r := rand.Int64N(total)
		for i, c := range cands {
			if r -= int64(max(c.Member.Weight, 0)); r < 0 {
				return i
			}
		}
		return len(cands) - 1
	})
}

// PreferLocal picks this node's own offer when it has one (no network
// hop), and otherwise asks fallback.
func PreferLocal(fallback Policy) Policy {
	return PolicyFunc(func(cands []Candidate) int {
		for i, c := range cands {
			if c.Local {
				return i
			}
		}
		return fallback.Pick(cands)
	})
}

// Sticky is a policy with affinity to the node it picked last: while that
// node's offer is live it keeps picking it, and otherwise asks fallback
// and remembers the new choice. Give each client (a session, a connection
// pool) its own Sticky, as WebLogic's stubs prefer a server they already
// talk to.
type Sticky struct {
	fallback Policy
	node     atomic.Pointer[string]
}

// NewSticky returns a Sticky policy that asks fallback for a first choice
// and whenever the remembered node has no live offer.
func NewSticky(fallback Policy) *Sticky { return &Sticky{fallback: fallback} }

// Pick implements Policy.
func (s *Sticky) Pick(cands []Candidate) int {
	if p := s.node.Load(); p != nil {
		for i, c := range cands {
			if c.Node == *p {
				return i
			}
		}
	}
	i := s.fallback.Pick(cands)
	if i >= 0 && i < len(cands) {
		n := cands[i].Node
		s.node.Store(&n)
	}
	return i
}

// Node returns the remembered node, or "".
func (s *Sticky) Node() string {
	if p := s.node.Load(); p != nil {
		return *p
	}
	return ""
}

// Reset forgets the remembered node.
func (s *Sticky) Reset() { s.node.Store(nil) }

// Filter passes to next only the candidates keep accepts (moved to the
// front of cands, in order). With none left it picks none.
func Filter(keep func(Candidate) bool, next Policy) Policy {
	return PolicyFunc(func(cands []Candidate) int {
		n := 0
		for i := range cands {
			if keep(cands[i]) {
				cands[i], cands[n] = cands[n], cands[i]
				n++
			}
		}
		if n == 0 {
			return -1
		}
		return next.Pick(cands[:n])
	})
}

// WithRole passes to next only the offers of nodes with the given
// membership role, e.g. WithRole("worker", RoundRobin()).
func WithRole(role string, next Policy) Policy {
	return Filter(func(c Candidate) bool { return c.Member.Role == role }, next)
}
