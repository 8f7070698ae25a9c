package proxy

import (
	"net/http"
	"sync"

	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication"
)

// Policy picks the node for one attempt of a request: Pick returns the
// index in cands of its choice, or -1 for none. cands are the live
// offers of the request's service not tried yet for this request, at
// least one; Pick may reorder them and must not keep the slice. It sees
// the request (read-only), so it can route by cookie, header or path.
// Policies are called concurrently.
type Policy interface {
	Pick(r *http.Request, cands []naming.Candidate) int
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(r *http.Request, cands []naming.Candidate) int

// Pick implements Policy.
func (f PolicyFunc) Pick(r *http.Request, cands []naming.Candidate) int { return f(r, cands) }

// FromNaming adapts a naming.Policy, which does not look at the request
// (RoundRobin, Weighted, Random...).
func FromNaming(p naming.Policy) Policy {
	return PolicyFunc(func(_ *http.Request, cands []naming.Candidate) int { return p.Pick(cands) })
}

// CookieRoute sends a request whose session cookie (cookieName; "" means
// replication.DefaultCookieName) names a route to the session's primary,
// and, once the primary was tried, to its secondary; the session is then
// served without moving it. A request without a session, or whose
// primary and secondary both were tried or have no live offer, goes where
// fallback says: the node that gets it takes the session over.
func CookieRoute(cookieName string, fallback Policy) Policy {
	if cookieName == "" {
		cookieName = replication.DefaultCookieName
	}
	return &cookieRoute{cookie: cookieName, fallback: fallback}
}

type cookieRoute struct {
	cookie   string
	fallback Policy
	ids      sync.Map // node name → replication.NodeID(name)
}

func (p *cookieRoute) Pick(r *http.Request, cands []naming.Candidate) int {
	c, err := r.Cookie(p.cookie)
	if err != nil {
		return p.fallback.Pick(r, cands)
	}
	id, err := replication.ParseID(c.Value)
	if err != nil {
		return p.fallback.Pick(r, cands)
	}
	for _, want := range []string{id.Primary, id.Secondary} {
		if want == "" {
			continue
		}
		for i := range cands {
			if p.nodeID(cands[i].Node) == want {
				return i
			}
		}
	}
	return p.fallback.Pick(r, cands)
}

// nodeID caches replication.NodeID, a hash, per node name.
func (p *cookieRoute) nodeID(name string) string {
	if v, ok := p.ids.Load(name); ok {
		return v.(string)
	}
	id := replication.NodeID(name)
	p.ids.Store(name, id)
	return id
}
