package replication

import (
	"sync"
	"time"
)

// Sessions that move between nodes on most requests are a routing
// mistake: a load balancer that ignores the cookie's route (round robin
// in front of the nodes) makes each request take its session over from
// the node that served the last one, a round trip or more each, about 4×
// slower than serving it where it lives. Nothing fails, so nobody would
// notice; hopWarning says so in the log, at most once per hopWarnEvery.
const (
	hopWindow    = 10 * time.Second
	hopThreshold = 100 // takeovers from a live node within hopWindow
	hopWarnEvery = 10 * time.Minute
)

// hopWatch counts takeovers from live nodes in the current window.
type hopWatch struct {
	mu     sync.Mutex
	start  time.Time // of the window
	n      int
	warned time.Time
}

// hop records one takeover at now, and reports whether to warn.
func (h *hopWatch) hop(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.start) > hopWindow {
		h.start, h.n = now, 0
	}
	h.n++
	if h.n < hopThreshold || (!h.warned.IsZero() && now.Sub(h.warned) < hopWarnEvery) {
		return false
	}
	h.warned = now
	return true
}

// hopped records a takeover from a live node, and warns if they are
// most requests.
func (s *Sessions) hopped() {
	if s.hops.hop(time.Now()) {
		s.log.Warn("sessions move between nodes on most requests: send each request to the node named in its cookie's route "+
			"(package proxy does), or every request pays a takeover", "takeovers", hopThreshold, "within", hopWindow)
	}
}
