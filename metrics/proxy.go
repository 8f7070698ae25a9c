package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/troupe-go/troupe/proxy"
)

// NewProxy returns a Collector for a proxy.Handler's Stats. It carries no
// node label: a process usually runs one proxy (wrap the registerer with
// prometheus.WrapRegistererWith to tell several apart).
func NewProxy(h *proxy.Handler) prometheus.Collector {
	return proxyCollector{h: h, g: newGroup(nil, proxySpecs)}
}

type proxyCollector struct {
	h *proxy.Handler
	g group[proxy.Stats]
}

func (c proxyCollector) Describe(ch chan<- *prometheus.Desc) { c.g.describe(ch) }
func (c proxyCollector) Collect(ch chan<- prometheus.Metric) { c.g.collect(ch, c.h.Stats()) }

var proxySpecs = []spec[proxy.Stats]{
	{name: "proxy_requests_total", typ: counter, label: "outcome",
		help: "Requests by outcome: served (by the first node tried), retried (served after others failed), unavailable (503), failed (502), canceled (the client went away).",
		values: func(s proxy.Stats) []value {
			return []value{{"served", float64(s.Served)}, {"retried", float64(s.Retried)}, {"unavailable", float64(s.Unavailable)},
				{"failed", float64(s.Failed)}, {"canceled", float64(s.Canceled)}}
		}},
	{name: "proxy_attempts_total", typ: counter,
		help:   "Requests sent to a node, first tries and retries.",
		values: func(s proxy.Stats) []value { return one(s.Attempts) }},
	{name: "proxy_nodes_marked_down_total", typ: counter,
		help:   "Times a node was marked down (refused a connection, timed out).",
		values: func(s proxy.Stats) []value { return one(s.MarkedDown) }},
	{name: "proxy_passed_503_total", typ: counter,
		help:   "503 answers of a node that a request went past to another node.",
		values: func(s proxy.Stats) []value { return one(s.Passed503) }},
}
