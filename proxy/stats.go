package proxy

import "sync/atomic"

// Stats counts what a Handler did with its requests. Every request ends
// in exactly one of Served, Retried, Unavailable, Failed and Canceled.
type Stats struct {
	Served      uint64 // answered by the first node tried
	Retried     uint64 // answered by a node after others failed
	Unavailable uint64 // 503: no live node offered the service
	Failed      uint64 // 502: the nodes tried failed, and no more could be tried
	Canceled    uint64 // the client went away before an answer
	Attempts    uint64 // requests sent to a node, first tries and retries
	MarkedDown  uint64 // times a node was marked down (refused, timed out)
	Passed503   uint64 // 503 answers of a node that the request went past to another node
}

type counters struct {
	served, retried, unavailable, failed, canceled, attempts, markedDown, passed503 atomic.Uint64
}

// Stats returns a snapshot of the handler's counters.
func (h *Handler) Stats() Stats {
	c := &h.stats
	return Stats{
		Served: c.served.Load(), Retried: c.retried.Load(), Unavailable: c.unavailable.Load(),
		Failed: c.failed.Load(), Canceled: c.canceled.Load(), Attempts: c.attempts.Load(),
		MarkedDown: c.markedDown.Load(), Passed503: c.passed503.Load(),
	}
}
